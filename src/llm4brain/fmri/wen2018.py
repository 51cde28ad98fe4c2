"""File names of the Wen et al. (2018) release (CC2017): ``subject{n}/fmri/{segment}/.../{segment}_{repeat}_*``
with CIFTI ``*_Atlas.dtseries.nii`` (HCP grayordinates) and MNI NIfTI volumes, one segment per run.

Imports nothing heavy, so the workflow's input functions find the same runs as the library.
"""

from __future__ import annotations

import re
from pathlib import Path

from llm4brain.fmri.bids import is_cifti


def _repeat_order(path: Path) -> list[int | str]:
    """Natural order, so ``seg1_10`` comes after ``seg1_9``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.name)]


def wen_bolds(subject_dir: Path, segments: list[str], images: str) -> dict[str, list[Path]]:
    """Each segment's runs (its repeats, in order): the CIFTI dense time series, or the other NIfTI files
    (``images: mni``) under ``fmri/{segment}/``. A segment without runs is an error naming its folder."""
    runs = {}
    for segment in segments:
        folder = subject_dir / "fmri" / segment
        files = sorted(folder.glob("**/*.nii*"), key=_repeat_order)
        cifti = [f for f in files if f.name.endswith("_Atlas.dtseries.nii")]
        chosen = cifti if images == "cifti" else [f for f in files if not is_cifti(f)]
        if not chosen:
            kind = "*_Atlas.dtseries.nii" if images == "cifti" else "NIfTI (*.nii[.gz], not CIFTI)"
            raise FileNotFoundError(f"{folder}: no {kind} runs for segment {segment}")
        runs[segment] = chosen
    return runs
