"""``preprocess_collection``: one subject of an unlabelled collection → ``results/collections/{name}/{subject}.h5``.

Each run is read into the task's space (resampled onto the task mask's grid, or the task's CIFTI
grayordinates) and cleaned by the task subjects' own per-run code (``read_clean_run``: trim, nuisance
regression, z-score). There are no events: every kept volume is a sample of the ``train`` split, keyed by
``(run name, volume index)``, so windows of consecutive TRs never cross runs. A run that cannot be used
stops the job (``on_bad_run: error``) or is recorded in the subject's QC table and left out (``skip``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from llm4brain.artifacts import atomic_h5, atomic_path, open_artifact, set_attrs, write_keys
from llm4brain.fmri.bids import confounds_file
from llm4brain.fmri.images import make_space
from llm4brain.fmri.preprocess import ROWS, read_clean_run, run_extent, scale_rows, space_name
from llm4brain.fmri.runs import Run, RunLayout, check_id
from llm4brain.runtime import LOG
from llm4brain.sections import FmriConfig
from llm4brain.tables import InputError, read_tsv

QC_COLUMNS = {"collection": str, "subject": str, "run": str, "file": str, "status": str, "volumes": int, "reason": str}


def preprocess_collection_subject(
    *,
    collection: str,
    subject: str,
    runs: dict[str, str | Path],
    mask_path: str | Path | None,
    out_path: str | Path,
    qc_path: str | Path,
    tr: float,
    fmri: FmriConfig,
    layout: RunLayout,
    on_bad_run: str = "error",
) -> None:
    """Clean every run of one collection subject and write its volumes as ``train`` samples, atomically.

    Args:
        collection: the collection's name (its ``scmbm.collections`` entry's ``name``), recorded in the
            artifact and the QC rows.
        subject: the subject's folder name in the collection (``sub-01``, ``100307``).
        runs: run name → file, the subject's runs (from :func:`llm4brain.fmri.discover.discover`); the name
            keys each volume's sample ``(run name, volume index)``.
        mask_path: the task's ROI mask NIfTI, onto whose grid volume runs are resampled; None when the
            task's runs are CIFTI (the samples are then the task's grayordinates).
        out_path: the samples artifact to write (``results/collections/{name}/{subject}.h5``); it appears
            only once complete.
        qc_path: the TSV to write, one row per run (``collection, subject, run, file, status, volumes,
            reason``): ``ok``, or ``skipped`` with the reason.
        tr: the collection's repetition time in seconds (its ``tr``, else ``data.tr``); every run's header
            TR is checked against it.
        fmri: the cleaning keys of the ``fmri`` section (``detrend_order``, ``high_pass``, ``zscore``,
            ``mask_labels``, ``cifti_structures``) with the collection's own ``trim`` and ``confounds``.
        layout: the task's ``data.layout``, ``data.bids`` and ``data.wen2018`` entries, which name the
            samples' space in the artifact.
        on_bad_run: ``error`` stops at the first run that cannot be used; ``skip`` leaves it out and records
            why in the QC table.

    Raises:
        ValueError: ``on_bad_run`` is neither ``error`` nor ``skip``.
        InputError: a malformed subject id, no runs, a run that cannot be used (when ``on_bad_run`` is
            ``error``), or no voxel usable in every kept run.
    """
    check_id(subject, f"collection {collection}: subject id")
    if on_bad_run not in ("error", "skip"):
        raise ValueError(f"on_bad_run must be error or skip, got {on_bad_run!r}")
    items = [Run(Path(path), Path(path), name, None, None, confounds_file(Path(path))) for name, path in runs.items()]
    if not items:
        raise InputError(f"collection {collection}: subject {subject} has no runs")
    space = make_space(items[0].bold, mask_path, fmri.replace(resample=True))
    qc: list[dict[str, Any]] = []
    with atomic_h5(out_path, "fmri", fmri.to_dict(), rdcc_nbytes=0) as f:
        group = f.create_group("train")
        bold: h5py.Dataset | None = None
        keys: list[tuple[str, int]] = []
        usable_runs: list[np.ndarray] = []  # per good run: its usable voxels and their tSNR
        tsnr_runs: list[np.ndarray] = []
        for run in items:
            try:
                kept = run_extent(space, run, tr, fmri.trim)
                series, ok, run_tsnr = read_clean_run(space, run, kept, tr, fmri)
                if not ok.any():
                    raise InputError(f"{run.bold}: no usable voxel (every one is non-finite or constant)")
            except InputError as err:
                if on_bad_run == "error":
                    raise
                LOG.warning("collection %s, %s: skipping run %s: %s", collection, subject, run.segment, err)
                qc.append(qc_row(collection, subject, run, "skipped", 0, str(err)))
                continue
            if bold is None:  # the first good run fixes the grayordinates of a CIFTI space
                bold = group.create_dataset(
                    "bold", (0,) + space.shape, np.float32, maxshape=(None,) + space.shape, chunks=(1,) + space.shape
                )
            everything = np.ones(space.n_voxels, bool)
            first = len(keys)
            bold.resize(first + len(series), axis=0)
            for r in range(0, len(series), ROWS):
                bold[first + r : first + r + ROWS] = space.samples(series[r : r + ROWS], everything)
            keys += [(run.segment, v) for v in range(len(series))]
            usable_runs.append(ok)
            tsnr_runs.append(run_tsnr)
            qc.append(qc_row(collection, subject, run, "ok", len(series), ""))
            del series  # released before the next run is read
        n_ok = len(usable_runs)
        if bold is None:  # every run skipped: an empty shard, so the collection goes on (and its QC says why)
            bold = group.create_dataset("bold", (0,) + space.shape, np.float32)
            usable, tsnr = np.zeros(space.n_voxels, bool), np.zeros(space.n_voxels)
        else:
            usable, tsnr = np.logical_and.reduce(usable_runs), np.mean(tsnr_runs, axis=0)
        if n_ok and not usable.any():
            raise InputError(f"collection {collection}: subject {subject} has no voxel usable in every run")
        keep = space.samples(np.ones((1, usable.size), np.float32), usable)[0]
        if n_ok and not usable.all():
            scale_rows(bold, keep)
        write_keys(group, [k[0] for k in keys], [k[1] for k in keys])
        f.create_dataset("mask", data=(keep > 0).astype(np.uint8))
        group_qc = f.create_group("qc")
        group_qc.create_dataset("tsnr", data=tsnr.astype(np.float32))
        group_qc.create_dataset("usable", data=usable.astype(np.uint8))
        set_attrs(
            f,
            {
                "subject": subject,
                "collection": collection,
                "tr": tr,
                "params": fmri.to_dict(),
                "space": space_name(layout, space),
                "n_runs": n_ok,
                "n_skipped": len(qc) - n_ok,
                **space.attrs(),
            },
        )
        write_qc(qc, qc_path)
    LOG.info("collection %s, %s: %d volumes from %d of %d runs", collection, subject, len(keys), n_ok, len(items))


def qc_row(collection: str, subject: str, run: Run, status: str, volumes: int, reason: str) -> dict[str, Any]:
    return {
        "collection": collection,
        "subject": subject,
        "run": run.segment,
        "file": str(run.bold),
        "status": status,
        "volumes": volumes,
        "reason": reason.replace("\t", " ").replace("\n", " "),
    }


def write_qc(rows: list[dict[str, Any]], path: str | Path) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(rows, columns=list(QC_COLUMNS)).to_csv(tmp, sep="\t", index=False)


def collection_qc(name: str, qc_paths: list[str | Path], out_path: str | Path) -> pd.DataFrame:
    """Every subject's QC rows of a collection in one table; a collection left with no usable run is an
    error naming the runs' reasons."""
    tables = [read_tsv(path, columns=QC_COLUMNS, nullable=("reason",)) for path in qc_paths]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=list(QC_COLUMNS))
    if not (table["status"] == "ok").any():
        reasons = "; ".join(table["reason"].dropna().head(3))
        more = " ..." if len(table) > 3 else ""
        raise InputError(f"collection {name}: no usable run among {len(table)} ({reasons}{more})")
    skipped = int((table["status"] == "skipped").sum())
    if skipped:
        LOG.warning("collection %s: %d of %d runs skipped (see %s)", name, skipped, len(table), out_path)
    with atomic_path(out_path) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    return table


def shards_with_samples(paths: list[str | Path]) -> list[str]:
    """The collection subjects' files that hold samples: one whose every run was skipped is an empty shard
    (its QC rows say why), which the trainer does not need to open."""
    kept = []
    for path in paths:
        with open_artifact(path, "fmri", ("train/bold",)) as f:
            if len(f["train/bold"]):
                kept.append(str(path))
    return kept
