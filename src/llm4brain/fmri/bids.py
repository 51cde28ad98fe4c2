"""BIDS file names: which runs a config selects and what their side tables are called.

Imports nothing heavy, so the workflow's input functions use the same selection as the library.
"""

from __future__ import annotations

import re
from pathlib import Path

DERIVED = re.compile(r"_(space|res|den|desc)-[A-Za-z0-9]+")


def is_cifti(path: Path | str) -> bool:
    """A CIFTI dense time series (``*.dtseries.nii``), read as grayordinates rather than a volume."""
    return str(path).endswith(".dtseries.nii")


def bids_bolds(subject_dir: Path) -> list[Path]:
    """Every BOLD run of a subject: NIfTI ``*_bold.nii[.gz]`` or CIFTI ``*_bold.dtseries.nii`` under
    ``[ses-*/]func`` (not fMRIPrep's ``*_boldref`` images)."""
    func = [*subject_dir.glob("func"), *subject_dir.glob("ses-*/func")]
    return sorted(
        p for d in func for pattern in ("*_bold.nii", "*_bold.nii.gz", "*_bold.dtseries.nii") for p in d.glob(pattern)
    )


def select_bolds(bolds: list[Path], entities: dict[str, str | None]) -> list[Path]:
    """The BOLD files whose name carries every configured entity (``task``, ``space``, ``desc``; None = any)."""
    wanted = [f"_{key}-{value}_" for key, value in entities.items() if value]
    return [b for b in bolds if all(w in b.name for w in wanted)]


def raw_stem(bold: Path) -> str:
    """The run's name without ``_bold.nii[.gz]`` and derivative entities: what its events and confounds
    tables are named after (``sub-01_task-movie_run-1_space-T1w_desc-preproc_bold`` → ``sub-01_task-movie_run-1``)."""
    return DERIVED.sub("", re.sub(r"_bold(\.dtseries)?\.nii(\.gz)?$", "", bold.name))


def confounds_file(bold: Path) -> Path | None:
    """fMRIPrep's ``*_desc-confounds_timeseries.tsv`` of a run, when it is next to it."""
    confounds = bold.with_name(f"{raw_stem(bold)}_desc-confounds_timeseries.tsv")
    return confounds if confounds.exists() else None
