"""fMRI preprocessing throughput against nilearn and peak memory against one run, at Wen 2018 size.

    .venv/bin/python benchmarks/fmri_preprocess.py [--runs 86]

1. One Wen-size run (240 kept volumes × 59,412 cortical grayordinates, float32): cleaning alone (linear
   detrend + z-score), ours (``clean_run``) vs nilearn's ``signal.clean(detrend=True,
   standardize="zscore_sample")`` on the same in-memory array. Goal: ratio ≥ 1.0.
2. A whole Wen-size subject (86 CIFTI runs: 18 segments × 2 + 5 × 10, 246 volumes each, trimmed to 240) through
   ``preprocess_subject`` (read, trim, detrend order 4, z-score, pair, average test repeats, write), vs
   loading each run with nibabel, cleaning it with nilearn (linear detrend) and writing it to HDF5. Goal:
   ratio ≥ 1.0.
   The segment files are written once and the repeats are symbolic links, so both sides read from the page
   cache alike. Peak RSS of a child process running ``preprocess_subject``, above its RSS after imports,
   relative to one run's size. Goal: ≤ 2.0.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scale import defaults

VOLUMES, KEEP, GRAYORDINATES = 246, 240, 59_412
SEGMENTS = {"train": [f"seg{i}" for i in range(1, 19)], "test": [f"test{i}" for i in range(1, 6)]}
REPEATS = {"train": 2, "test": 10}
# the fmri section: the schema's defaults (so that a new key cannot leave this copy behind), Wen 2018's trim
PARAMS = {
    **defaults()["fmri"],
    "detrend_order": 4,
    "average_repeats": {"train": False, "test": True},
    "trim": {"start": 0, "end": 4, "keep": KEEP},
    "unpaired_clips": "drop",
}


def write_subject(root: Path, n_runs: int) -> list[Path]:
    """One CIFTI file per segment, each repeat a link to it, in the Wen layout; ``n_runs`` runs in all."""
    from nibabel import cifti2

    half = GRAYORDINATES // 2
    models = cifti2.BrainModelAxis.from_surface(
        np.arange(half), 32_492, "CortexLeft"
    ) + cifti2.BrainModelAxis.from_surface(np.arange(GRAYORDINATES - half), 32_492, "CortexRight")
    rng = np.random.default_rng(0)
    runs = []
    for split, segments in SEGMENTS.items():
        for segment in segments:
            folder = root / "subject1" / "fmri" / segment / "cifti"
            folder.mkdir(parents=True)
            first = folder / f"{segment}_1_Atlas.dtseries.nii"
            data = (1000 + rng.standard_normal((VOLUMES, GRAYORDINATES), dtype=np.float32)).astype(np.float32)
            cifti2.Cifti2Image(data, header=(cifti2.SeriesAxis(0, 2.0, VOLUMES, unit="SECOND"), models)).to_filename(
                first
            )
            runs.append(first)
            for r in range(2, REPEATS[split] + 1):
                link = folder / f"{segment}_{r}_Atlas.dtseries.nii"
                link.symlink_to(first.name)
                runs.append(link)
    return runs[:n_runs]


def peak_rss_child(root: Path, out: Path, segments: dict) -> dict:
    """Run preprocess_subject in a fresh interpreter; its RSS after imports and its peak (VmHWM), in bytes."""
    code = f"""
import json, time
from llm4brain.fmri.preprocess import preprocess_subject
from llm4brain.fmri.runs import RunLayout
from llm4brain.sections import FmriConfig

def rss(field):
    return int(next(l for l in open("/proc/self/status") if l.startswith(field)).split()[1]) * 1024

base = rss("VmRSS:")
start = time.perf_counter()
preprocess_subject("subject1", {str(root / "subject1")!r}, None, {str(out)!r}, {segments!r}, 2.0,
                   FmriConfig.from_dict({PARAMS!r}), RunLayout(layout="wen2018"))
print(json.dumps({{"base": base, "peak": rss("VmHWM:"), "seconds": time.perf_counter() - start}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=86, help="runs of the subject (86 = Wen 2018)")
    args = parser.parse_args()
    import h5py
    import nibabel as nib
    from nilearn.signal import clean

    from llm4brain.fmri.preprocess import clean_run
    from llm4brain.sections import FmriConfig

    run_bytes = KEEP * GRAYORDINATES * 4
    series = np.random.default_rng(1).standard_normal((KEEP, GRAYORDINATES), dtype=np.float32) + 1000
    ours_s, theirs_s = [], []
    for _ in range(5):
        copy = series.copy()
        start = time.perf_counter()
        clean_run(copy, FmriConfig.from_dict({**PARAMS, "detrend_order": 1}), 2.0)
        ours_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        reference = clean(series, detrend=True, standardize="zscore_sample", t_r=2.0)
        theirs_s.append(time.perf_counter() - start)
    assert np.abs(copy - reference).max() < 1e-4
    ours, theirs = min(ours_s), min(theirs_s)
    print(
        f"one run (240 x 59,412 float32, {run_bytes / 2**20:.0f} MiB): cleaning {ours:.2f} s vs nilearn "
        f"{theirs:.2f} s -> throughput ratio {theirs / ours:.2f} (goal >= 1.0)"
    )

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        runs = write_subject(root, args.runs)
        shown = {run.parent.parent.name for run in runs}
        segments = {split: [s for s in segs if s in shown] for split, segs in SEGMENTS.items()}
        child = peak_rss_child(root, root / "subject1.h5", segments)
        start = time.perf_counter()
        with h5py.File(root / "nilearn.h5", "w") as f:
            for i, run in enumerate(runs):
                data = np.asarray(nib.load(run).dataobj, dtype=np.float32)[1:-4]  # type: ignore[attr-defined]  # a CIFTI image
                f.create_dataset(
                    str(i), data=clean(data, detrend=True, standardize="zscore_sample", t_r=2.0).astype(np.float32)
                )
        nilearn_s = time.perf_counter() - start
    volumes = len(runs) * KEEP
    print(
        f"whole subject ({len(runs)} runs, {volumes} volumes): preprocess_subject {child['seconds']:.1f} s "
        f"({volumes / child['seconds']:.0f} volumes/s) vs nibabel load + nilearn clean + HDF5 write {nilearn_s:.1f} s "
        f"-> throughput ratio {nilearn_s / child['seconds']:.2f} (goal >= 1.0)"
    )
    rise = child["peak"] - child["base"]
    print(
        f"peak RSS {child['peak'] / 2**20:.0f} MiB, {rise / 2**20:.0f} MiB above the {child['base'] / 2**20:.0f} MiB "
        f"after imports -> {rise / run_bytes:.2f} x one run (goal <= 2.0); whole subject would be "
        f"{len(runs) * run_bytes / 2**30:.1f} GiB"
    )


if __name__ == "__main__":
    main()
