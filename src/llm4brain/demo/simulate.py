"""``simulate_demo``: write the embedded demo dataset in real formats (BIDS-like NIfTI, mp4, TSV)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from llm4brain.demo.brain import clip_features, make_subject, roi_mask, simulate_run, template_maps
from llm4brain.demo.render import render_segment, write_mp4
from llm4brain.demo.scenes import ATTRIBUTES, sample_timeline
from llm4brain.runtime import LOG
from llm4brain.sections import DataSegmentsConfig, DemoConfig
from llm4brain.seeds import SeedOffset

VOXEL_MM = 3.0


def _affine(grid: tuple[int, int, int]) -> np.ndarray:
    affine = np.diag([VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])
    affine[:3, 3] = -VOXEL_MM * (np.asarray(grid) - 1) / 2
    return affine


def _save_nifti(data: np.ndarray, affine: np.ndarray, path: Path, tr: float | None = None) -> None:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    if tr is not None:
        img.header.set_zooms((VOXEL_MM,) * 3 + (tr,))
    nib.save(img, path)


def presentations(segments: dict[str, list[str]], train_repeats: list[int], test_repeats: int) -> list[str]:
    """Every run's segment, before shuffling: training segments cycle through ``train_repeats``."""
    runs: list[str] = []
    for i, seg in enumerate(segments["train"]):
        runs += [seg] * train_repeats[i % len(train_repeats)]
    for seg in segments["test"]:
        runs += [seg] * test_repeats
    return runs


def write_scenes(rows: list[tuple], path: Path) -> None:
    """The ground truth of every clip, ``(segment, tr, count, size, colour, shape, motion, background)``, and
    its BIDS sidecar (``scenes.json``) whose ``Levels`` list every value an attribute can take."""
    pd.DataFrame(rows, columns=["segment", "tr", *ATTRIBUTES]).to_csv(path, sep="\t", index=False)
    sidecar = {
        name: {
            "Description": f"the scene's {name} (drawn uniformly from the levels)",
            "Levels": {value: value for value in values},
        }
        for name, values in ATTRIBUTES.items()
    }
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2))


def simulate_demo(
    *,
    out_dir: str | os.PathLike,
    subjects: list[str],
    segments: DataSegmentsConfig,
    tr: float,
    demo: DemoConfig,
    seed: int,
) -> None:
    """Render every segment and simulate every subject; files appear under ``out_dir`` only when complete.

    Args:
        out_dir: the demo's raw-data folder (``data.root``): stimuli, captions, scenes, ROI mask and every
            subject's BIDS runs.
        subjects: the subjects to simulate (``data.subjects``).
        segments: ``data.segments``: the ``train`` and ``test`` segments, and ``subject_train``, the
            subjects that watched other training segments than ``train``.
        tr: the repetition time in seconds (``data.tr``).
        demo: the ``demo`` section (frame size, fps, grid, regime, noise, drift, repeats, ...).
        seed: the replicate's seed: one draw of stimuli and subjects per replicate.
    """
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "stimuli").mkdir(parents=True)
    x, y, z = demo.grid  # the schema fixes three items (and two of scene_trs)
    grid = (x, y, z)
    shortest, longest = demo.scene_trs
    fps, trs_per_segment = demo.fps, demo.trs_per_segment
    frames_per_tr = int(round(fps * tr))
    if abs(frames_per_tr - fps * tr) > 1e-6:
        raise ValueError(f"demo: fps ({fps}) x TR ({tr}) must be a whole number of frames")

    rng = np.random.default_rng(seed)
    features: dict[str, np.ndarray] = {}
    rows, scenes = [], []
    own = segments.subject_train
    # segments only some subjects watched are drawn after the shared ones, which thus stay as without them
    extra = [seg for segs in own.values() for seg in segs if seg not in segments.train + segments.test]
    for segment in dict.fromkeys(segments.train + segments.test + extra):
        timeline = sample_timeline(rng, trs_per_segment, (shortest, longest))
        frames = render_segment(timeline, tr, fps, demo.frame_size, seed=int(rng.integers(2**31)))
        write_mp4(frames, tmp / "stimuli" / f"{segment}.mp4", fps)
        features[segment] = clip_features(frames, timeline, frames_per_tr)
        rows += [(segment, k, scene.caption()) for k, scene in enumerate(timeline)]
        scenes += [(segment, k, *(getattr(scene, name) for name in ATTRIBUTES)) for k, scene in enumerate(timeline)]
        LOG.info("rendered %s: %d frames", segment, len(frames))
    pd.DataFrame(rows, columns=["segment", "tr", "caption"]).to_csv(tmp / "captions.tsv", sep="\t", index=False)
    write_scenes(scenes, tmp / "scenes.tsv")

    mask = roi_mask(grid)
    affine = _affine(grid)
    _save_nifti(mask.astype(np.uint8), affine, tmp / "roi_mask.nii.gz")
    template = template_maps(seed + SeedOffset.DEMO_TEMPLATES, grid)
    reference = np.concatenate([features[seg] for seg in segments.train + segments.test])
    rest_before, rest_after = demo.rest_trs
    for s, subject in enumerate(subjects):
        watched = {"train": own.get(subject, segments.train), "test": segments.test}
        run_order = presentations(watched, demo.train_repeats, demo.test_repeats)
        model = make_subject(
            template,
            mask,
            seed + SeedOffset.DEMO_SUBJECTS + s,
            demo.subject_variability,
            demo.subject_shift,
            demo.noise,
            demo.drift,
            reference,
            demo.regime,
            demo.idiosyncrasy,
        )
        func = tmp / subject / "func"
        func.mkdir(parents=True)
        scans = []
        for r, segment in enumerate(model.rng.permutation(run_order), start=1):
            bold = simulate_run(model, features[segment], rest_before, rest_after, tr)
            volume = np.zeros(grid + (bold.shape[0],), np.float32)
            volume[mask] = bold.T
            stem = f"{subject}_task-movie_run-{r:02d}"
            _save_nifti(volume, affine, func / f"{stem}_bold.nii.gz", tr=tr)
            events = pd.DataFrame(
                {
                    "onset": [rest_before * tr],
                    "duration": [trs_per_segment * tr],
                    "trial_type": ["movie"],
                    "stim_file": [f"stimuli/{segment}.mp4"],
                    "segment": [segment],
                }
            )
            events.to_csv(func / f"{stem}_events.tsv", sep="\t", index=False)
            scans.append(f"func/{stem}_bold.nii.gz")
        pd.DataFrame({"filename": scans}).to_csv(tmp / subject / f"{subject}_scans.tsv", sep="\t", index=False)
        LOG.info("simulated %s: %d runs", subject, len(scans))
    description = {"Name": "llm4brain embedded demo", "BIDSVersion": "1.8.0", "DatasetType": "raw"}
    (tmp / "dataset_description.json").write_text(json.dumps(description, indent=2))

    out_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
        target = out_dir / path.relative_to(tmp)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    shutil.rmtree(tmp)
