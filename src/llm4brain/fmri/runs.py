"""Find one subject's runs and their side tables (events, confounds), with checks that name files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llm4brain.fmri.bids import bids_bolds, confounds_file, raw_stem, select_bolds
from llm4brain.fmri.wen2018 import wen_bolds
from llm4brain.tables import InputError, read_tsv

SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class Run:
    """One BOLD run, the stimulus segment it showed and, for fMRIPrep derivatives, its confounds table."""

    bold: Path
    events: Path
    segment: str
    onset: float | None  # seconds from the file's first volume to the segment's first frame; None = first kept volume
    duration: float | None  # seconds; None = until the last kept volume
    confounds: Path | None = None


def check_id(value: str, what: str) -> str:
    """Refuse ids that would break paths or wildcards (slashes, dots, spaces, ...)."""
    if not SAFE_ID.match(value):
        raise InputError(f"{what} {value!r} may only contain letters, digits, '-' and '_'")
    return value


def bids_runs(
    subject_dir: Path, entities: dict[str, str | None] | None = None, events_root: Path | None = None
) -> list[Run]:
    """The ``*_bold.nii[.gz]`` runs under ``subject_dir/[ses-*/]func`` that match ``entities``, each with its
    ``*_events.tsv`` (named like the run without derivative entities, next to it or at the same relative
    path under ``events_root``) and fMRIPrep's ``*_desc-confounds_timeseries.tsv`` when present."""
    bolds = select_bolds(bids_bolds(subject_dir), entities or {})
    if not bolds:
        raise InputError(f"{subject_dir}: no func/*_bold.nii[.gz] runs found matching {entities or {}}")
    runs = []
    for bold in bolds:
        events = bold.with_name(f"{raw_stem(bold)}_events.tsv")
        if not events.exists() and events_root is not None:
            events = events_root / bold.parent.relative_to(subject_dir.parent) / events.name
        if not events.exists():
            raise InputError(f"{bold}: no events file (expected {events.name} next to it or under the events root)")
        runs.append(read_run(bold, events))
    return runs


def wen_runs(subject_dir: Path, segments: list[str], images: str) -> list[Run]:
    """Wen 2018 runs: one segment per file, shown from the first kept volume to the last (no events tables)."""
    try:
        found = wen_bolds(subject_dir, segments, images)
    except FileNotFoundError as err:
        raise InputError(str(err)) from err
    return [Run(bold, bold, segment, None, None) for segment, bolds in found.items() for bold in bolds]


def find_runs(subject_dir: Path, data: dict) -> list[Run]:
    """A subject's runs in the configured layout (``data`` is the config's data section)."""
    if data["layout"] == "wen2018":
        return wen_runs(subject_dir, data["segments"]["train"] + data["segments"]["test"], data["wen2018"]["images"])
    bids = data.get("bids", {})
    events_root = Path(bids["events_root"]) if bids.get("events_root") else None
    return bids_runs(subject_dir, {key: bids.get(key) for key in ("task", "space", "desc")}, events_root)


def read_confounds(run: Run, columns: list[str], n_volumes: int) -> np.ndarray:
    """(T, C) confound regressors; fMRIPrep leaves derivatives' first rows n/a, which become 0."""
    if run.confounds is None:
        raise InputError(f"{run.bold}: confounds {columns} requested but no *_desc-confounds_timeseries.tsv next to it")
    table = read_tsv(run.confounds, columns=dict.fromkeys(columns, float), nullable=columns)
    if len(table) != n_volumes:
        raise InputError(f"{run.confounds}: {len(table)} rows but {run.bold.name} has {n_volumes} volumes")
    return table[columns].fillna(0.0).to_numpy(np.float64)


def read_run(bold: Path, events_path: Path) -> Run:
    """The run's stimulus segment, onset and duration from its events TSV (one stimulus per run)."""
    if not events_path.exists():
        raise InputError(f"{bold}: events file {events_path} does not exist")
    events = read_tsv(
        events_path, columns={"onset": float, "duration": float}, optional={"segment": str, "stim_file": str}
    )
    if "segment" in events.columns:
        segments = events["segment"]
    elif "stim_file" in events.columns:
        segments = events["stim_file"].map(lambda s: Path(s).name.split(".")[0])
    else:
        raise InputError(f"{events_path}: needs a 'segment' or 'stim_file' column naming the stimulus")
    if len(events) != 1:
        raise InputError(f"{events_path}: expected one stimulus segment per run, found {len(events)} events")
    return Run(
        bold,
        events_path,
        segments.iloc[0],
        float(events["onset"].iloc[0]),
        float(events["duration"].iloc[0]),
        confounds_file(bold),
    )
