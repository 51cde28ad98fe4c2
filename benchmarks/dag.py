"""Dry-run (DAG build) time of the workflow for three sizes, against each one's goal; builds no data.

    .venv/bin/python benchmarks/dag.py

Sizes: the demo (3 subjects × 14 segments), a Wen-2018-size design (3 subjects × 86 runs of 23 segments:
2 repeats per training segment, 10 per test segment), an HCP-size design (184 subjects × 4 runs) and the
demo with a 1,000-subject HCP collection for SC-MBM (4 resting-state runs each, empty files in a temporary
HCP tree: discovery lists the folders and the DAG gets one preprocess_collection job per subject). All use
the demo layout, whose simulate_demo rule stands in for the raw data, so the DAG is complete without any
file on disk. Prints seconds and the ratio to the goal (≤ 1.0 meets it), after Snakemake's own start-up
(``snakemake --version``: importing it and its plugins), which no workflow can go below.
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
    "demo": (None, 1.5),
    "wen2018": (design(3, 18, 5, train_repeats=2, test_repeats=10), 5.0),  # 86 runs per subject
    "hcp": (design(184, 3, 1, train_repeats=1, test_repeats=1), 10.0),  # 4 runs per subject
}
COLLECTION_SUBJECTS = 1000
COLLECTION_GOAL = 5.0  # seconds more than the demo without it
REST_RUNS = ("rfMRI_REST1_LR", "rfMRI_REST1_RL", "rfMRI_REST2_LR", "rfMRI_REST2_RL")


def hcp_collection(root: Path, subjects: int) -> dict:
    """An HCP S1200-like tree of ``subjects`` × 4 resting-state runs (empty volume files: the demo's runs are
    volumes, and a dry run only checks that inputs exist), and the config entry that pretrains on it."""
    for i in range(subjects):
        for run in REST_RUNS:
            folder = root / f"{100000 + i}" / "MNINonLinear" / "Results" / run
            folder.mkdir(parents=True)
            (folder / f"{run}.nii.gz").touch()
    entry = {"name": "hcp", "root": str(root), "layout": "hcp", "subjects": "all", "filters": {"task": "rfMRI_REST*"}}
    return {"scmbm": {"pretrain": True, "collections": [entry]}}


def dry_run_seconds(workdir: Path, overrides: dict | None) -> float:
    args = [sys.executable, "-m", "snakemake", "--dry-run", "--quiet", "--cores", "1"]
    if overrides is not None:
        (workdir / "bench.yaml").write_text(yaml.safe_dump(overrides))
        args += ["--configfile", "config/config.yaml", "bench.yaml"]
    return seconds(args, workdir)


def seconds(args: list[str], workdir: Path) -> float:
    """The best of two runs' wall time."""
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        subprocess.run(args, cwd=workdir, check=True, capture_output=True)
        best = min(best, time.perf_counter() - start)
    return best


def copy_workflow(workdir: Path) -> None:
    """What the workflow needs to run, without results or data: a fresh start in ``workdir``."""
    for name in COPY:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, workdir / name)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        copy_workflow(workdir)
        startup = seconds([sys.executable, "-m", "snakemake", "--version"], workdir)
        print(f"Snakemake's own start-up (snakemake --version): {startup:.2f} s")
        print(f"{'design':12s} {'seconds':>8s} {'goal':>6s} {'ratio':>6s}")
        took = {}
        for name, (overrides, goal) in SIZES.items():
            took[name] = dry_run_seconds(workdir, overrides)
            print(f"{name:12s} {took[name]:8.2f} {goal:6.1f} {took[name] / goal:6.2f}")
        collection = dry_run_seconds(workdir, hcp_collection(workdir / "hcp", COLLECTION_SUBJECTS))
        more = collection - took["demo"]
        print(
            f"demo + a {COLLECTION_SUBJECTS:,}-subject HCP collection: {collection:.2f} s, {more:.2f} s more than the "
            f"demo; goal {COLLECTION_GOAL:.1f} s more, ratio {more / COLLECTION_GOAL:.2f}"
        )


if __name__ == "__main__":
    main()
