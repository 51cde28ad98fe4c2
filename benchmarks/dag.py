"""Dry-run (DAG build) time of the workflow for three sizes, against each one's goal; builds no data.

    .venv/bin/python benchmarks/dag.py

Sizes: the demo (3 subjects × 14 segments), a Wen-2018-size design (3 subjects × 86 runs of 23 segments:
2 repeats per training segment, 10 per test segment) and an HCP-size design (184 subjects × 4 runs). All
use the demo layout, whose simulate_demo rule stands in for the raw data, so the DAG is complete without any
file on disk. Prints seconds and the ratio to the goal
(≤ 1.0 meets it).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
COPY = ("Snakefile", "rules", "workflow", "src", "config", "profiles", "envs", "requirements.txt", "report")


def design(subjects: int, train: int, test: int, train_repeats: int, test_repeats: int) -> dict:
    return {
        "data": {
            "subjects": [f"sub-{i:03d}" for i in range(1, subjects + 1)],
            "segments": {
                "train": [f"seg{i:02d}" for i in range(1, train + 1)],
                "test": [f"test{i:02d}" for i in range(1, test + 1)],
            },
        },
        "demo": {"train_repeats": [train_repeats], "test_repeats": test_repeats},
        "align": {"heldout": []},
    }


SIZES = {
    "demo": (None, 3.0),
    "wen2018": (design(3, 18, 5, train_repeats=2, test_repeats=10), 5.0),  # 86 runs per subject
    "hcp": (design(184, 3, 1, train_repeats=1, test_repeats=1), 30.0),
}  # 4 runs per subject


def dry_run_seconds(workdir: Path, overrides: dict | None) -> float:
    args = [sys.executable, "-m", "snakemake", "--dry-run", "--quiet", "--cores", "1"]
    if overrides:
        (workdir / "bench.yaml").write_text(yaml.safe_dump(overrides))
        args += ["--configfile", "config/config.yaml", "bench.yaml"]
    start = time.perf_counter()
    subprocess.run(args, cwd=workdir, check=True, capture_output=True)
    return time.perf_counter() - start


def copy_workflow(workdir: Path) -> None:
    """What the workflow needs to run, without results or data: a fresh start in ``workdir``."""
    for name in COPY:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, workdir / name)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        copy_workflow(workdir)
        print(f"{'design':10s} {'seconds':>8s} {'goal':>6s} {'ratio':>6s}")
        for name, (overrides, goal) in SIZES.items():
            seconds = min(dry_run_seconds(workdir, overrides) for _ in range(2))
            print(f"{name:10s} {seconds:8.2f} {goal:6.1f} {seconds / goal:6.2f}")


if __name__ == "__main__":
    main()
