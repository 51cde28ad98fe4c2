"""Which subjects and runs an unlabelled collection (``scmbm.collections``) holds, from file names alone.

Runs at DAG build for every collection, so it only lists folders and reads ``participants.tsv``: no image is
opened here (headers, TRs and grids are checked by each subject's ``preprocess_collection`` job).

Layouts:

- ``bids`` / ``fmriprep``: ``{root}/sub-*/[ses-*/]func/*_bold.nii[.gz]`` or ``*_bold.dtseries.nii``; the
  filters glob the BIDS entities of the file name. A run is named by its entities without the subject and
  derivative ones (``ses-1_task-rest_run-1``).
- ``hcp``: ``{root}/{subject}/MNINonLinear/Results/{run}/{run}{desc}.dtseries.nii`` (``desc`` defaults to
  ``_Atlas``) or ``{run}{desc}.nii.gz`` (MNI volumes; ``desc`` defaults to nothing); ``task`` and ``run``
  glob the run folder's name (``rfMRI_REST1_LR``), which names the run.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from llm4brain.fmri.bids import bids_bolds, is_cifti, raw_stem
from llm4brain.fmri.runs import check_id
from llm4brain.sections import ScmbmCollectionsConfig, ScmbmCollectionsFiltersConfig
from llm4brain.tables import InputError, read_tsv

ENTITIES = ("task", "space", "desc", "run")
HCP_DEFAULT_DESC = {"cifti": "_Atlas", "volume": ""}


def entity(name: str, key: str) -> str | None:
    """The value of BIDS entity ``key`` in a file name (``sub-01_task-rest_run-2_bold.nii.gz``, run → ``2``)."""
    found = re.search(rf"(?:^|_){key}-([A-Za-z0-9]+)(?=_|\.)", name)
    return found.group(1) if found else None


def matches(value: str | None, pattern: str | None) -> bool:
    """A filter: ``None`` takes anything; a glob takes a present value it matches."""
    return pattern is None or (value is not None and fnmatch.fnmatchcase(value, pattern))


def participants(root: Path, layout: str) -> list[str]:
    """Every subject of a collection: ``participants.tsv``'s ``participant_id`` column when a BIDS dataset
    has one, else its ``sub-*`` folders; for HCP, the folders that hold ``MNINonLinear/Results``."""
    if layout == "hcp":
        return sorted(p.name for p in root.iterdir() if (p / "MNINonLinear" / "Results").is_dir())
    table = root / "participants.tsv"
    if table.exists():
        ids = read_tsv(table, columns={"participant_id": str})["participant_id"].str.strip()
        return [i if i.startswith("sub-") else f"sub-{i}" for i in ids]
    return sorted(p.name for p in root.glob("sub-*") if p.is_dir())


def bids_runs(subject_dir: Path, filters: ScmbmCollectionsFiltersConfig, kind: str) -> dict[str, Path]:
    """``run name → file`` of one BIDS / fMRIPrep subject's runs of ``kind`` (cifti or volume) that pass the
    entity filters."""
    runs: dict[str, list[Path]] = {}
    for bold in bids_bolds(subject_dir):
        if is_cifti(bold) != (kind == "cifti"):
            continue
        if all(matches(entity(bold.name, key), getattr(filters, key)) for key in ENTITIES):
            name = re.sub(r"^sub-[A-Za-z0-9]+_?", "", raw_stem(bold)) or "run"
            runs.setdefault(name, []).append(bold)
    return unique(subject_dir, runs, "space/desc")


def hcp_runs(subject_dir: Path, filters: ScmbmCollectionsFiltersConfig, kind: str) -> dict[str, Path]:
    """``run name → file`` of one HCP subject: one file per ``MNINonLinear/Results/{run}`` folder."""
    desc = filters.desc
    desc = HCP_DEFAULT_DESC[kind] if desc is None else desc
    ending = ".dtseries.nii" if kind == "cifti" else ".nii.gz"
    runs: dict[str, list[Path]] = {}
    for folder in sorted((subject_dir / "MNINonLinear" / "Results").glob("*")):
        if not folder.is_dir() or not (matches(folder.name, filters.task) and matches(folder.name, filters.run)):
            continue
        for path in sorted(folder.glob(f"{folder.name}*{ending}")):
            middle = path.name[len(folder.name) : -len(ending)]
            if (kind == "cifti" or not is_cifti(path)) and fnmatch.fnmatchcase(middle, desc):
                runs.setdefault(folder.name, []).append(path)
    return unique(subject_dir, runs, "desc")


def unique(subject_dir: Path, runs: dict[str, list[Path]], narrow: str) -> dict[str, Path]:
    """One file per run name; two (a run in two spaces, or two variants) is an error naming both."""
    for name, files in runs.items():
        if len(files) > 1:
            raise InputError(
                f"{subject_dir}: run {name} matches {len(files)} files {[f.name for f in files]}; "
                f"narrow the collection's {narrow} filters"
            )
    return {name: files[0] for name, files in sorted(runs.items())}


def discover(collection: ScmbmCollectionsConfig, kind: str) -> dict[str, dict[str, Path]]:
    """``subject → {run name → file}`` of one ``scmbm.collections`` entry, runs of ``kind`` (the task's:
    ``cifti`` grayordinates or ``volume``). Subjects listed by name must have runs; with ``all``, subjects
    without a matching run are left out. No run at all is an error.

    Args:
        collection: one ``scmbm.collections`` entry, its defaults filled in: ``name``, ``root`` (the
            collection's folder), ``layout`` (``bids``, ``fmriprep`` or ``hcp``), ``subjects`` (a list of
            subject folders, or ``all``) and ``filters`` (globs on ``task``, ``space``, ``desc`` and ``run``;
            None = any).
        kind: the kind of the task's runs, ``cifti`` or ``volume``: only runs of that kind are taken, so
            the collection's samples are in the task's space.

    Returns:
        ``subject → {run name → file}`` for every subject with a matching run (in the order listed, or of
            ``participants.tsv`` or the folder names), each subject's runs sorted by name.

    Raises:
        InputError: ``root`` is not a folder, a subject id has other characters than letters, digits, ``-``
            and ``_``, a listed subject has no matching run, a run name matches two files, or no run matches
            at all.
    """
    root, layout, name = Path(collection.root), collection.layout, collection.name
    filters = {key: getattr(collection.filters, key) for key in ENTITIES}  # for messages
    if not root.is_dir():
        raise InputError(f"collection {name}: root {root} is not a folder")
    listed = collection.subjects != "all"
    subjects = list(collection.subjects) if listed else participants(root, layout)
    find = hcp_runs if layout == "hcp" else bids_runs
    found = {}
    for subject in subjects:
        check_id(subject, f"collection {name}: subject id")
        runs = find(root / subject, collection.filters, kind) if (root / subject).is_dir() else {}
        if runs:
            found[subject] = runs
        elif listed:
            raise InputError(
                f"collection {name}: no {kind} runs of subject {subject} under "
                f"{root / subject} match the filters {filters}"
            )
    if not found:
        raise InputError(
            f"collection {name}: no {kind} runs under {root} match the filters {filters} (layout {layout})"
        )
    return found
