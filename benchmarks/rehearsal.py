"""The whole DAG at Wen 2018 size on synthetic data of the release's real shapes: each rule's wall time and
peak RSS, against the 6-GB goal (issue 29).

    .venv/bin/python benchmarks/rehearsal.py                 # full size, ViT-B/16-shaped features (~18 GB)
    .venv/bin/python benchmarks/rehearsal.py --vision vit_g  # ViT-g/14-shaped features (~36 GB)
    .venv/bin/python benchmarks/rehearsal.py --scale 0.1     # the same DAG small (tests/test_rehearsal.py)
    .venv/bin/python benchmarks/rehearsal.py --scale 0.1 --growth   # each rule's peak at 4x the segments / 1x

It writes, in a temporary folder that it deletes at the end:

- the release in its layout (``{subject}/fmri/{segment}/cifti/{segment}_{repeat}_Atlas.dtseries.nii``):
  3 subjects, 18 training segments shown twice and 5 test segments ten times, runs of 245 or 246 volumes (240
  kept: config ``fmri.trim``) × 59,412 cortical grayordinates, float32 CIFTI dense time series. A segment's
  repeats are one file and links to it (the content does not matter here, the reads do);
- ``results/features/{segment}.h5``: stimulus features of the vision tower's shape per TR (ViT-B/16: 8 frames
  × 197 tokens × 768; ViT-g/14: 8 × 257 × 1408), float16, written straight into the features artifact. This
  is the documented bypass of ``extract_frames`` and ``cache_features``: ViT inference over 5,520 TRs is a GPU
  job. Snakemake runs with ``--allowed-rules`` naming every other rule, so the features stand as given;
- a captions table, one caption per TR (``data.captions``).

Then ``snakemake --cores 2 --configfile benchmarks/rehearsal.yaml`` (small models, few steps: the data is at
full size, the compute is not) runs every other rule, from ``preprocess_fmri`` to ``summarize_replicates``.
Each job's wall time and peak RSS come from its Snakemake ``benchmark:`` file. ``--scale s`` multiplies the
run length, the grayordinates and the tokens per frame by ``s`` (the DAG, segments, repeats and subjects
stay). ``--segments-factor k`` repeats the training segments k times over, for the growth check: a rule that
streams keeps its peak when the data grows.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "benchmarks" / "rehearsal.yaml"
GOAL_GB = 6.0
GROWTH_GOAL = 1.25  # peak RSS at 4x the training segments over 1x
VOLUMES, KEEP, GRAYORDINATES, SURFACE = 246, 240, 59_412, 32_492
REPEATS = {"train": 2, "test": 10}
VISION = {"vit_b": (8, 197, 768), "vit_g": (8, 257, 1408)}  # frames per TR, tokens per frame, width
SKIPPED = ("extract_frames", "cache_features")  # the features are written instead
WORDS = "a person dog car bird walks runs flies sits on in the street sky water field red blue small".split()


def scaled(size: int, scale: float) -> int:
    return max(1, round(size * scale))


def write_release(root: Path, config: dict[str, Any], scale: float, seed: int = 0) -> None:
    """Every subject's CIFTI runs in the Wen 2018 layout: one file per (subject, segment), its repeats links."""
    from nibabel import cifti2

    grayordinates, keep = scaled(GRAYORDINATES, scale), scaled(KEEP, scale)
    half, surface = grayordinates // 2, max(scaled(SURFACE, scale), grayordinates)
    models = cifti2.BrainModelAxis.from_surface(
        np.arange(half), surface, "CortexLeft"
    ) + cifti2.BrainModelAxis.from_surface(np.arange(grayordinates - half), surface, "CortexRight")
    rng = np.random.default_rng(seed)
    shared = {  # each segment's response, shared by the subjects (so that the models have something to learn)
        segment: rng.standard_normal((keep, grayordinates), dtype=np.float32)
        for segments in config["data"]["segments"].values()
        for segment in segments
    }
    for subject in config["data"]["subjects"]:
        for split, segments in config["data"]["segments"].items():
            for segment in segments:
                volumes = keep + 6  # 2 leading and 4 trailing volumes beyond the kept ones, as the release's runs
                data = np.full((volumes, grayordinates), 1000.0, np.float32)
                data[2 : 2 + keep] += shared[segment] + rng.standard_normal((keep, grayordinates), dtype=np.float32)
                folder = root / subject / "fmri" / segment / "cifti"
                folder.mkdir(parents=True)
                first = folder / f"{segment}_1_Atlas.dtseries.nii"
                axes = (cifti2.SeriesAxis(0, 2.0, volumes, unit="SECOND"), models)
                cifti2.Cifti2Image(data, header=axes).to_filename(first)
                for repeat in range(2, REPEATS[split] + 1):
                    (folder / f"{segment}_{repeat}_Atlas.dtseries.nii").symlink_to(first.name)


def write_features(results: Path, segments: list[str], trs: int, shape: tuple[int, int, int]) -> None:
    """``results/features/{segment}.h5`` in the features schema, ``trs`` TRs of ``shape`` tokens each (a few
    random TRs, repeated: only the size matters)."""
    sys.path.insert(0, str(REPO / "src"))
    from llm4brain.artifacts import atomic_h5

    pool = np.random.default_rng(1).standard_normal((16, *shape), dtype=np.float32).astype(np.float16)
    for s, segment in enumerate(segments):
        with atomic_h5(results / "features" / f"{segment}.h5", "features") as f:
            f.attrs["segment"] = segment
            tokens = f.create_dataset("tokens", (trs, *shape), np.float16, chunks=(1, *shape))
            for t in range(trs):
                tokens[t] = pool[(7 * t + s) % len(pool)]
            f.create_dataset("tr", data=np.arange(trs, dtype=np.int32))


def write_stimuli(folder: Path, segments: list[str], trs: int) -> None:
    """Small real mp4s of the test segments, one frame a second, for the gallery's stills (``plot_gallery``
    reads them; nothing else does once the features are written)."""
    sys.path.insert(0, str(REPO / "src"))
    from llm4brain.demo.render import write_mp4

    folder.mkdir()
    rng = np.random.default_rng(3)
    for segment in segments:
        write_mp4(rng.integers(0, 255, (2 * trs, 32, 32, 3), dtype=np.uint8), folder / f"{segment}.mp4", fps=1)


def write_captions(path: Path, segments: list[str], trs: int) -> None:
    rng = np.random.default_rng(2)
    rows = [
        (segment, t, " ".join(rng.choice(WORDS, 6))) for segment in segments for t in range(trs)
    ]  # one caption per TR
    pd.DataFrame(rows, columns=["segment", "tr", "caption"]).to_csv(path, sep="\t", index=False)


def rehearsal_config(folder: Path, scale: float, factor: int) -> dict[str, Any]:
    config = yaml.safe_load(CONFIG.read_text())
    segments = config["data"]["segments"]
    if factor > 1:
        segments["train"] = [f"{segment}x{k}" for k in range(factor) for segment in segments["train"]]
    config["data"].update(
        root=str(folder / "release"), stimuli=str(folder / "stimuli"), captions=str(folder / "captions.tsv")
    )
    config["fmri"]["trim"]["keep"] = scaled(KEEP, scale)
    config["encoder"]["tokenizer"]["vector_patch"] = max(4, scaled(256, scale))
    return config


def allowed_rules(workdir: Path, configfile: Path) -> list[str]:
    """Every rule of the workflow but the ones the rehearsal stands in for."""
    listed = subprocess.run(
        [sys.executable, "-m", "snakemake", "--list-rules", "--configfile", str(configfile)],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    rules = [line.split()[0] for line in listed if line and not line[0].isspace()]  # "name (docstring)"
    return [rule for rule in rules if rule not in SKIPPED]


def job_table(results: Path) -> pd.DataFrame:
    """Per rule: jobs, summed and longest wall time, and the largest peak RSS of a job (MB)."""
    rows = []
    for path in (results / "benchmarks").rglob("*.tsv"):
        parts = path.relative_to(results / "benchmarks").with_suffix("").parts
        rule = next(p for p in parts if not p.startswith("r") or not p[1:].isdigit())  # past r{seed}/
        bench = pd.read_csv(path, sep="\t").iloc[-1]
        rows.append({"rule": rule, "s": float(bench["s"]), "max_rss_mb": float(bench["max_rss"])})
    jobs = pd.DataFrame(rows)
    return (
        jobs.groupby("rule")
        .agg(jobs=("s", "size"), wall_s=("s", "sum"), longest_s=("s", "max"), peak_rss_mb=("max_rss_mb", "max"))
        .sort_values("peak_rss_mb", ascending=False)
    )


def rehearse(folder: Path, *, scale: float, vision: str, factor: int, cores: int) -> tuple[pd.DataFrame, float]:
    """Write the data, run the DAG, return the per-rule table and the DAG's wall time."""
    from dag import copy_workflow

    workdir = folder / "workflow"
    workdir.mkdir()
    copy_workflow(workdir)
    config = rehearsal_config(folder, scale, factor)
    configfile = workdir / "rehearsal.yaml"
    configfile.write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    write_release(folder / "release", config, scale)
    segments = config["data"]["segments"]["train"] + config["data"]["segments"]["test"]
    frames, tokens, width = VISION[vision]
    write_features(workdir / "results", segments, scaled(KEEP, scale), (frames, scaled(tokens, scale), width))
    write_captions(folder / "captions.tsv", segments, scaled(KEEP, scale))
    write_stimuli(folder / "stimuli", config["data"]["segments"]["test"], scaled(KEEP, scale))
    print(f"data written in {time.perf_counter() - start:.0f} s: {disk_gb(folder):.1f} GB", flush=True)
    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", str(cores), "--configfile", str(configfile), "--quiet"]
        + ["--allowed-rules", *allowed_rules(workdir, configfile)],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if run.returncode:
        raise SystemExit(f"snakemake failed:\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}")
    return job_table(workdir / "results"), seconds


def disk_gb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) / 1e9


def growth(args: argparse.Namespace) -> None:
    """Each rule's peak RSS with 4x the training segments over its peak with 1x: a rule that streams stays
    within GROWTH_GOAL (the data it holds would otherwise grow 4x)."""
    peaks = {}
    for factor in (1, 4):
        folder = Path(tempfile.mkdtemp(prefix="rehearsal-", dir=args.tmp))
        try:
            table, _ = rehearse(folder, scale=args.scale, vision=args.vision, factor=factor, cores=args.cores)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        peaks[factor] = table["peak_rss_mb"]
    ratios = pd.DataFrame({"peak_1x_mb": peaks[1], "peak_4x_mb": peaks[4], "ratio": peaks[4] / peaks[1]})
    print(f"peak RSS at 4x the training segments over 1x (scale {args.scale}, {args.vision}): goal <= {GROWTH_GOAL}")
    print(ratios.sort_values("ratio", ascending=False).to_string(float_format=lambda v: f"{v:.2f}"))
    if args.out is not None:
        ratios.to_csv(args.out, sep="\t")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="run length, grayordinates and tokens per frame")
    parser.add_argument("--vision", choices=sorted(VISION), default="vit_b", help="the features' shape per TR")
    parser.add_argument("--segments-factor", type=int, default=1, help="the training segments, k times over")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--tmp", default=None, help="folder for the temporary data (default: the system's)")
    parser.add_argument("--out", type=Path, default=None, help="also write the per-rule table here (TSV)")
    parser.add_argument(
        "--growth", action="store_true", help="run at --segments-factor 1 and 4: each rule's peak RSS ratio"
    )
    args = parser.parse_args()
    if args.growth:
        growth(args)
        return
    folder = Path(tempfile.mkdtemp(prefix="rehearsal-", dir=args.tmp))
    try:
        table, seconds = rehearse(
            folder, scale=args.scale, vision=args.vision, factor=args.segments_factor, cores=args.cores
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    print(
        f"rehearsal: scale {args.scale}, {args.vision} features, training segments x{args.segments_factor}, "
        f"{args.cores} cores, commit {commit.stdout.strip()}"
    )
    print(table.to_string(float_format=lambda v: f"{v:.1f}"))
    worst = table["peak_rss_mb"].drop(list(SKIPPED), errors="ignore").max() / 1024
    print(
        f"\nwhole DAG: {seconds:.0f} s; largest peak RSS {worst:.2f} GB, "
        f"goal {GOAL_GB:.0f} GB: ratio {worst / GOAL_GB:.2f}"
    )
    if args.out is not None:
        table.to_csv(args.out, sep="\t")


if __name__ == "__main__":
    main()
