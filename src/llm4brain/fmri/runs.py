"""Find one subject's runs and their side tables (events, confounds), with checks that name files."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from llm4brain.fmri.bids import bids_bolds, confounds_file, raw_stem, select_bolds
from llm4brain.fmri.wen2018 import wen_bolds
from llm4brain.sections import DataBidsConfig, DataWen2018Config
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


@dataclass(frozen=True, kw_only=True)
class RunLayout:
    """Where a subject's runs are and which count: the ``data`` section's ``layout``, ``bids`` and
    ``wen2018`` entries. Preprocessing reads only these of ``data`` (its rules' params, so editing another
    data key reruns nothing). The default is BIDS-like with no entity filter, as the demo writes."""

    layout: Literal["demo", "bids", "wen2018"] = "bids"
    bids: DataBidsConfig = field(default_factory=DataBidsConfig)
    wen2018: DataWen2018Config = field(default_factory=DataWen2018Config)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> RunLayout:
        """The layout of a ``data`` section, or of the fragment of it a rule passes (missing keys: defaults)."""
        return cls(
            layout=cast("Literal['demo', 'bids', 'wen2018']", data.get("layout", "bids")),
            bids=DataBidsConfig.from_dict(data.get("bids") or {}),
            wen2018=DataWen2018Config.from_dict(data.get("wen2018") or {}),
        )


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


def find_runs(subject_dir: Path, layout: RunLayout, segments: list[str]) -> list[Run]:
    """A subject's runs in ``layout``; a Wen 2018 subject's are those of ``segments`` (the release has no
    events tables to name them)."""
    if layout.layout == "wen2018":
        return wen_runs(subject_dir, segments, layout.wen2018.images)
    bids = layout.bids
    events_root = Path(bids.events_root) if bids.events_root else None
    return bids_runs(subject_dir, {"task": bids.task, "space": bids.space, "desc": bids.desc}, events_root)


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
