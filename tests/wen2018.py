"""A miniature of the Wen et al. (2018) release in exactly its layout, for the tests.

``{subject}/fmri/{segment}/cifti/{segment}_{repeat}_Atlas.dtseries.nii`` (left and right cortical surfaces
plus a subcortical structure the default selection leaves out) and ``.../mni/{segment}_{repeat}_mni.nii.gz``
volumes. Like the release's runs, each has 1 or 2 leading and 4 trailing volumes beyond the ``keep`` that
the official code retains; those volumes are NaN here, so a run that is not trimmed exactly is visibly wrong.
Every repeat of a segment shows the same response (shared across subjects) plus noise.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import cifti2

SURFACE = 24  # vertices per hemisphere, 20 of them in the medial-wall-free selection
GRID = (6, 5, 4)


def brain_models() -> cifti2.BrainModelAxis:
    left = cifti2.BrainModelAxis.from_surface(np.arange(20), SURFACE, "CortexLeft")
    right = cifti2.BrainModelAxis.from_surface(np.arange(2, 22), SURFACE, "CortexRight")
    thalamus = cifti2.BrainModelAxis.from_mask(np.ones((2, 2, 2), bool), affine=np.eye(4), name="ThalamusLeft")
    return left + right + thalamus


def write_wen2018(
    root: Path,
    subjects: list[str],
    segments: dict[str, list[str]],
    keep: int,
    tr: float = 2.0,
    repeats: dict[str, int] | None = None,
    noise: float = 0.5,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write the runs; return each segment's noise-free response over the 40 cortical grayordinates."""
    repeats = repeats or {"train": 2, "test": 3}
    rng = np.random.default_rng(seed)
    models = brain_models()
    cortex = np.isin(models.name, ["CIFTI_STRUCTURE_CORTEX_LEFT", "CIFTI_STRUCTURE_CORTEX_RIGHT"])
    responses = {seg: rng.normal(size=(keep, int(cortex.sum()))) for segs in segments.values() for seg in segs}
    root.mkdir(parents=True, exist_ok=True)
    mask = np.zeros(GRID, bool)
    mask[1:5, 1:4, 1:3] = True
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), np.diag([3.0, 3.0, 3.0, 1.0])), root / "mni_mask.nii.gz")
    for subject in subjects:
        for split, segs in segments.items():
            for seg in segs:
                for r in range(1, repeats[split] + 1):
                    lead = 1 + (r % 2)  # 245- and 246-volume runs, in miniature
                    n = lead + keep + 4
                    series = np.full((n, len(models)), np.nan, np.float32)
                    series[lead : lead + keep] = 100.0 + rng.normal(scale=noise, size=(keep, len(models)))
                    series[lead : lead + keep, cortex] += responses[seg]
                    folder = root / subject / "fmri" / seg
                    (folder / "cifti").mkdir(parents=True, exist_ok=True)
                    (folder / "mni").mkdir(exist_ok=True)
                    axes = (cifti2.SeriesAxis(0.0, tr, n, unit="SECOND"), models)
                    cifti2.Cifti2Image(series, header=axes).to_filename(
                        folder / "cifti" / f"{seg}_{r}_Atlas.dtseries.nii"
                    )
                    volume = np.zeros(GRID + (n,), np.float32)
                    volume[mask] = series[:, cortex][:, : int(mask.sum())].T
                    img = nib.Nifti1Image(volume, np.diag([3.0, 3.0, 3.0, 1.0]))
                    img.header.set_xyzt_units("mm", "sec")
                    img.header["pixdim"][4] = tr
                    nib.save(img, folder / "mni" / f"{seg}_{r}_mni.nii.gz")
    return responses
