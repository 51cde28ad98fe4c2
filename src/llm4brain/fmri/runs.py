"""Find and load one subject's runs: the BOLD image, its events and the mask, with checks that name files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class InputError(ValueError):
    """Bad input data; the message names the file and the problem."""


@dataclass(frozen=True)
class Run:
    """One BOLD run and the stimulus segment it showed."""

    bold: Path
    events: Path
    segment: str
    onset: float  # seconds from the first volume to the segment's first frame
    duration: float


def check_id(value: str, what: str) -> str:
    """Refuse ids that would break paths or wildcards (slashes, dots, spaces, ...)."""
    if not SAFE_ID.match(value):
        raise InputError(f"{what} {value!r} may only contain letters, digits, '-' and '_'")
    return value


def bids_runs(subject_dir: Path) -> list[Run]:
    """All ``*_bold.nii[.gz]`` runs under ``subject_dir/[ses-*/]func`` with their ``*_events.tsv``."""
    bolds = sorted(subject_dir.glob("func/*_bold.nii*")) + sorted(subject_dir.glob("ses-*/func/*_bold.nii*"))
    if not bolds:
        raise InputError(f"{subject_dir}: no func/*_bold.nii[.gz] runs found")
    runs = []
    for bold in bolds:
        events = bold.with_name(re.sub(r"_bold\.nii(\.gz)?$", "_events.tsv", bold.name))
        if not events.exists():
            raise InputError(f"{bold}: no events file (expected {events.name})")
        runs.append(read_run(bold, events))
    return runs


def read_run(bold: Path, events_path: Path) -> Run:
    """The run's stimulus segment, onset and duration from its events TSV (one stimulus per run)."""
    if not events_path.exists():
        raise InputError(f"{bold}: events file {events_path} does not exist")
    events = pd.read_csv(events_path, sep="\t")
    missing = {"onset", "duration"} - set(events.columns)
    if missing:
        raise InputError(f"{events_path}: missing columns {sorted(missing)}")
    if "segment" in events.columns:
        segments = events["segment"].astype(str)
    elif "stim_file" in events.columns:
        segments = events["stim_file"].astype(str).map(lambda s: Path(s).name.split(".")[0])
    else:
        raise InputError(f"{events_path}: needs a 'segment' or 'stim_file' column naming the stimulus")
    if len(events) != 1:
        raise InputError(f"{events_path}: expected one stimulus segment per run, found {len(events)} events")
    return Run(bold, events_path, segments.iloc[0], float(events["onset"].iloc[0]), float(events["duration"].iloc[0]))


def header_tr(img: nib.Nifti1Image, path: Path) -> float:
    """The TR in seconds from the NIfTI header (``pixdim[4]`` with its time unit)."""
    zooms = img.header.get_zooms()
    if len(zooms) < 4:
        raise InputError(f"{path}: header has no time step (zooms {zooms})")
    unit = img.header.get_xyzt_units()[1]
    scale = {"msec": 1e-3, "usec": 1e-6}.get(unit, 1.0)
    return float(zooms[3]) * scale


def load_bold(path: Path, tr: float) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Load a 4-D run as float32 after checking its dimensionality and TR."""
    try:
        img = nib.load(path)
        if len(img.shape) != 4:
            raise InputError(f"{path}: expected a 4-D image, got shape {img.shape}")
        found = header_tr(img, path)
        if abs(found - tr) > 1e-3:
            hint = " (milliseconds stored as seconds? fix the header's xyzt_units)" if abs(found / 1000 - tr) < 1e-3 else ""
            raise InputError(f"{path}: header TR is {found:g} s but the config says {tr:g} s{hint}")
        data = np.asarray(img.dataobj, dtype=np.float32)
    except InputError:
        raise
    except Exception as err:  # nibabel raises many kinds for truncated or corrupt files
        raise InputError(f"{path}: cannot read image ({type(err).__name__}: {err})") from err
    return data, img


def load_mask(path: Path, reference: nib.Nifti1Image, reference_path: Path) -> np.ndarray:
    """A boolean 3-D mask that must share the run's grid and affine."""
    mask_img = nib.load(path)
    if mask_img.shape[:3] != reference.shape[:3]:
        raise InputError(f"{path}: mask shape {mask_img.shape[:3]} differs from {reference_path} {reference.shape[:3]}")
    if not np.allclose(mask_img.affine, reference.affine, atol=1e-3):
        raise InputError(f"{path}: mask affine differs from {reference_path}")
    return np.asarray(mask_img.dataobj) > 0
