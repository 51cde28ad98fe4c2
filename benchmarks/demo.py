"""Wall time of the whole demo from scratch, ``snakemake --cores 2`` on ``config/config.yaml``, against the
5-minute goal; then the longest jobs (Snakemake ``benchmark:`` seconds) and the demo's CIDEr ratios.

    .venv/bin/python benchmarks/demo.py

Runs in a temporary copy of the workflow (nothing in ``results/`` is touched) and takes about as long as the
demo. Prints seconds and the ratio to the goal (≤ 1.0 meets it).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from dag import copy_workflow

GOAL = 300.0  # seconds, on a 2-core machine without a GPU
LONGEST = 6


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        copy_workflow(workdir)
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "snakemake", "--cores", "2", "--quiet"], cwd=workdir, check=True, capture_output=True
        )
        seconds = time.perf_counter() - start
        print(f"{'demo':24s} {'seconds':>8s} {'goal':>6s} {'ratio':>6s}")
        print(f"{'snakemake --cores 2':24s} {seconds:8.1f} {GOAL:6.0f} {seconds / GOAL:6.2f}")
        jobs = {
            str(path.relative_to(workdir / "results/benchmarks").with_suffix("")): float(
                pd.read_csv(path, sep="\t")["s"].iloc[-1]
            )
            for path in (workdir / "results/benchmarks").rglob("*.tsv")
        }
        print("\nlongest jobs (s)")
        for job, job_seconds in sorted(jobs.items(), key=lambda item: -item[1])[:LONGEST]:
            print(f"  {job:40s} {job_seconds:6.1f}")
        metrics = pd.read_csv(workdir / "results/r0/eval/metrics.tsv", sep="\t").pivot(  # the demo's one replicate
            index="subject", columns="source", values="CIDEr"
        )
        print("\nCIDEr fmri / shuffled, fmri / video-teacher")
        for subject, row in metrics.iterrows():
            print(f"  {subject:8s} {row['fmri'] / row['shuffled']:5.2f}x {row['fmri'] / row['video-teacher']:6.0%}")


if __name__ == "__main__":
    main()
