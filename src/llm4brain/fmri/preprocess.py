"""``preprocess_fmri``: one subject's runs → ``results/fmri/{subject}.h5``, streamed run by run.

Per run: read the kept volumes into the subject's space (ROI voxels or CIFTI grayordinates), regress out a
polynomial trend (+ cosine drifts and confounds), z-score per voxel, then pair volume
``(onset + tr·TR + hrf_lag) / TR`` with the clip ``(segment, tr)``. Each run's samples go straight into
the artifact (summed where repeats are averaged; the odd and even repeats of the reliability split's
segments also into a scratch file, for the split-half reliability), so memory holds about one run, never
the subject. Once the usable voxels are known, one pass turns sums into means and zeroes the dropped voxels.

Which voxels are kept depends on the training runs alone by default: a voxel is usable when it is finite
and not constant in every training run (in a test run where it is not, it is zeroed), and reliability
selection uses the training segments' repeats (``reliability.split: train``). Selecting by the test
segments' repeats (``split: test``, the convention of Wen et al. and NeuroClips) lets test data choose the
voxels: it is opt-in and marked in the artifact (``voxel_selection``) and in every metrics table.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm import tqdm

from llm4brain.artifacts import atomic_h5, set_attrs, write_keys
from llm4brain.fmri.images import SurfaceSpace, VolumeSpace, make_space
from llm4brain.fmri.runs import InputError, Run, RunLayout, check_id, find_runs, read_confounds
from llm4brain.fmri.signal import column_blocks, cosine_drift, nuisance_basis, residualize, standardize
from llm4brain.runtime import LOG
from llm4brain.sections import FmriConfig, FmriReliabilityConfig, FmriTrimConfig

ROWS = 16  # samples written or read back at a time (temporaries stay a few MB)


def kept_volumes(path: Path, n: int, trim: FmriTrimConfig) -> tuple[int, int]:
    """The ``[start, stop)`` volumes a run keeps: ``trim.end`` dropped at the end, and at the start either
    ``trim.start`` volumes or, with ``trim.keep``, whatever exceeds ``keep`` (Wen et al.'s official code:
    245/246-volume runs lose 1/2 leading and 4 trailing volumes, keeping 240)."""
    keep, end = trim.keep, trim.end
    start = n - end - keep if keep else trim.start
    if start < 0 or start >= n - end:
        want = f"{keep} + {end} trailing" if keep else f"{trim.start} leading + {end} trailing"
        raise InputError(f"{path}: run has {n} volumes, too few to trim ({want} volumes)")
    return start, n - end


def pair_run(
    run: Run, n_volumes: int, tr: float, hrf_lag: float, start: int = 0, drop_unpaired: bool = False
) -> list[tuple[int, int]]:
    """``(tr index, volume index)`` pairs for one run of ``n_volumes`` kept volumes, the first of which is
    volume ``start`` of the file: clip k is seen in volume (onset + k·TR + lag) / TR. Clips whose volume is
    past the run's end are an error (the run is shorter than its segment) unless ``drop_unpaired``."""
    onset = 0.0 if run.onset is None else run.onset - start * tr
    if onset < -1e-6:
        raise InputError(
            f"{run.events}: segment {run.segment!r} starts at {run.onset:g} s, before the first kept "
            f"volume ({start} trimmed at {tr:g} s)"
        )
    n_tr = n_volumes if run.duration is None else int(np.floor(run.duration / tr + 1e-6))
    pairs = [(k, int(round((onset + k * tr + hrf_lag) / tr))) for k in range(n_tr)]
    inside = [(k, v) for k, v in pairs if v < n_volumes]
    if not inside or (len(inside) < n_tr and not drop_unpaired):
        raise InputError(
            f"{run.bold}: run has {n_volumes} volumes but segment {run.segment!r} (onset {onset:g} s, "
            f"{n_tr} TRs, lag {hrf_lag:g} s) needs volume {pairs[-1][1] if pairs else 0}"
        )
    return inside


def run_extent(space: VolumeSpace | SurfaceSpace, run: Run, tr: float, trim: FmriTrimConfig) -> tuple[int, int, int]:
    """From the run's header only (TR and grid checked): its kept volumes ``(start, stop, n)``."""
    n = space.n_volumes(run.bold, tr)
    return *kept_volumes(run.bold, n, trim), n


def plan_run(
    space: VolumeSpace | SurfaceSpace, run: Run, tr: float, fmri: FmriConfig
) -> tuple[tuple[int, int, int], list[tuple[int, int]]]:
    """From the run's header only: its kept volumes ``(start, stop, n)`` and its ``(tr, volume)`` pairs."""
    start, stop, n = run_extent(space, run, tr, fmri.trim)
    pairs = pair_run(run, stop - start, tr, fmri.hrf_lag, start, fmri.unpaired_clips == "drop")
    return (start, stop, n), pairs


def read_clean_run(
    space: VolumeSpace | SurfaceSpace, run: Run, kept: tuple[int, int, int], tr: float, fmri: FmriConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The run's kept volumes in ``space``, cleaned (``clean_run``): series, usable voxels, tSNR. The one
    per-run cleaning of task subjects, new runs to decode and unlabelled collections."""
    start, stop, n = kept
    series = space.read(run.bold, start, stop)
    confounds = read_confounds(run, fmri.confounds, n)[start:stop] if fmri.confounds else None
    try:
        return series, *clean_run(series, fmri, tr, confounds)
    except ValueError as err:  # fewer kept volumes than nuisance regressors
        raise InputError(f"{run.bold}: {err}") from err


def clean_run(
    series: np.ndarray, fmri: FmriConfig, tr: float, confounds: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Clean one run's (T, V) float32 series in place: nuisance-regress (polynomial of ``detrend_order``,
    cosine drifts below ``high_pass`` Hz, confounds) and z-score, in one float64 pass over blocks of voxels.
    Returns the usable voxels (finite and not constant; unusable ones are zeroed, never divided by) and
    each voxel's temporal SNR before cleaning (mean / standard deviation over time).

    Args:
        series: the run's kept volumes, (T, V) float32 (time points × voxels or grayordinates); overwritten
            with the cleaned series.
        fmri: the ``fmri`` config section; reads ``detrend_order``, ``high_pass`` (Hz, or None for no
            cosine drifts) and ``zscore``.
        tr: the repetition time in seconds, which spaces the cosine drift regressors.
        confounds: (T, C) regressors (fMRIPrep confounds, the ``fmri.confounds`` columns) standardised and
            regressed out with the trends; None for none.

    Returns:
        usable: (V,) bool, the voxels that are finite and not constant in this run.
        tsnr: (V,) float64 temporal SNR of each voxel before cleaning (0 where it is not finite or
            does not vary).

    Raises:
        ValueError: the run has fewer time points than nuisance regressors.
    """
    extra = [] if confounds is None else [(confounds - confounds.mean(0)) / (confounds.std(0) + 1e-8)]
    if fmri.high_pass:
        extra.append(cosine_drift(series.shape[0], tr, fmri.high_pass))
    basis = nuisance_basis(series.shape[0], fmri.detrend_order, np.concatenate(extra, axis=1) if extra else None)
    finite, tsnr = np.ones(series.shape[1], bool), np.zeros(series.shape[1])
    for cols in column_blocks(series.shape[1]):
        block = series[:, cols].astype(np.float64)
        finite[cols] = np.isfinite(block).all(axis=0)
        block[:, ~finite[cols]] = 0.0
        mean = block.mean(axis=0)
        std = np.sqrt(np.clip(np.einsum("tv,tv->v", block, block) / len(block) - mean**2, 0.0, None))
        tsnr[cols] = np.divide(mean, std, out=np.zeros_like(mean), where=std > 1e-8 * (np.abs(mean) + 1.0))
        residualize(block, basis)
        if fmri.zscore:
            finite[cols] &= standardize(block)
        series[:, cols] = block
    return finite, tsnr


def fisher_z(r: np.ndarray) -> np.ndarray:
    return np.arctanh(np.clip(r, -0.999999, 0.999999))


class SplitHalf:
    """Per-voxel Pearson r, over clips, between the mean of odd and of even repeats (Wen et al.'s repeat
    reliability), accumulated block by block of clips so the repeats never sit in memory together."""

    def __init__(self, n_voxels: int) -> None:
        self.sums = np.zeros((5, n_voxels))  # a, b, ab, aa, bb
        self.n = 0

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        a, b = a.astype(np.float64), b.astype(np.float64)
        self.sums += np.stack([a.sum(0), b.sum(0), (a * b).sum(0), (a * a).sum(0), (b * b).sum(0)])
        self.n += len(a)

    def r(self) -> np.ndarray:
        """NaN where fewer than 3 clips were shown twice or a voxel does not vary."""
        if self.n < 3:
            return np.full(self.sums.shape[1], np.nan)
        sa, sb, sab, saa, sbb = self.sums
        cov, va, vb = self.n * sab - sa * sb, self.n * saa - sa**2, self.n * sbb - sb**2
        denom = np.sqrt(np.clip(va, 0, None) * np.clip(vb, 0, None))
        return np.divide(cov, denom, out=np.full_like(cov, np.nan), where=denom > 1e-12 * (self.n * (saa + sbb) + 1))


@dataclass
class SplitRows:
    """Where each run's samples go in one split: keys (one per row) and, per run, ``(first row, volumes)``;
    rows of an averaged split are shared by the repeats and count how many were added."""

    average: bool
    keys: list[tuple[str, int]] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    targets: dict[int, tuple[int, list[int]]] = field(default_factory=dict)


def plan_rows(
    runs: list[Run], pairs: tuple[list[tuple[int, int]], ...], split_of: dict[str, str], average: dict[str, bool]
) -> dict[str, SplitRows]:
    """Rows ordered by segment, then (unaveraged) run, then TR. One run's rows are always contiguous."""
    plan = {split: SplitRows(average[split]) for split in average}
    by_segment: dict[str, list[int]] = defaultdict(list)
    for i, run in enumerate(runs):
        by_segment[run.segment].append(i)
    for segment in sorted(by_segment):
        rows = plan[split_of[segment]]
        if rows.average:
            n = max(k for i in by_segment[segment] for k, _ in pairs[i]) + 1
            first = len(rows.keys)
            rows.keys += [(segment, k) for k in range(n)]
            rows.counts += [0] * n
            for i in by_segment[segment]:
                rows.targets[i] = (first, [v for _, v in pairs[i]])
                for k, _ in pairs[i]:
                    rows.counts[first + k] += 1
        else:
            for i in by_segment[segment]:
                rows.targets[i] = (len(rows.keys), [v for _, v in pairs[i]])
                rows.keys += [(segment, k) for k, _ in pairs[i]]
                rows.counts += [1] * len(pairs[i])
    return plan


def scale_rows(dataset: h5py.Dataset, keep: np.ndarray, counts: np.ndarray | None = None) -> None:
    """``dataset[r] = dataset[r] / counts[r] * keep``, a block of rows at a time: turns sums of repeats into
    means and zeroes the voxels dropped once every run was seen."""
    counts = np.ones(len(dataset), np.float32) if counts is None else counts
    counts = counts.reshape((-1,) + (1,) * keep.ndim)
    for r in range(0, len(dataset), ROWS):
        block = slice(r, min(r + ROWS, len(dataset)))
        dataset[block] = dataset[block] / counts[block] * keep


def add_rows(dataset: h5py.Dataset, first: int, volumes: list[int], rows_of: Any, accumulate: bool) -> None:
    """``dataset[first:first + len(volumes)] (+)= rows_of(volumes)``, a block of rows at a time; rows that
    only one run fills are written, not read back."""
    for r in range(0, len(volumes), ROWS):
        block = slice(first + r, first + min(r + ROWS, len(volumes)))
        values = rows_of(volumes[r : r + ROWS])
        dataset[block] = dataset[block] + values if accumulate else values


def preprocess_subject(
    subject: str,
    subject_dir: str | Path,
    mask_path: str | Path | None,
    out_path: str | Path,
    segments: dict[str, list[str]],
    tr: float,
    fmri: FmriConfig,
    layout: RunLayout | None = None,
) -> None:
    """Preprocess every run of ``subject`` and write the per-split samples atomically.

    Args:
        subject: the subject's id (a ``data.subjects`` entry), recorded in the artifact; letters, digits,
            ``-`` and ``_`` only.
        subject_dir: the subject's raw folder (``{data.root}/{subject}``): BIDS ``[ses-*/]func/*_bold.nii[.gz]``
            (or ``*_bold.dtseries.nii``) runs with their ``*_events.tsv``, or the Wen 2018 release's
            ``fmri/{segment}/`` folders.
        mask_path: the ROI mask NIfTI (``data.mask``) that NIfTI runs are read through; None for CIFTI runs,
            whose grayordinates ``fmri.cifti_structures`` selects.
        out_path: the artifact to write (``results/fmri/{subject}.h5``); it appears only once complete.
        segments: the segments the subject watched, by split: ``{"train": [...], "test": [...]}``
            (``data.segments``, or the subject's ``subject_train`` list); every run's segment must be
            listed, and every listed segment needs a run.
        tr: the repetition time in seconds (``data.tr``); every run's header TR is checked against it.
        fmri: the ``fmri`` config section (trim, detrend, high-pass, confounds, z-score, HRF lag, repeat
            averaging, reliability selection), recorded in the artifact as given.
        layout: the data section's ``layout``, ``bids`` and ``wen2018`` entries, which say where the runs and
            events tables are and which runs count; None = BIDS-like with no entity filter, as the demo
            writes (:class:`~llm4brain.fmri.runs.RunLayout`).

    Raises:
        InputError: a run of an unlisted segment or a listed segment without a run, a header TR or grid
            that differs, a run too short for its trim or its segment, or no usable voxel left.
    """
    check_id(subject, "subject id")
    subject_dir, out_path = Path(subject_dir), Path(out_path)
    layout = layout or RunLayout()
    split_of = {seg: split for split, segs in segments.items() for seg in segs}
    runs = find_runs(subject_dir, layout, segments["train"] + segments["test"])
    for run in runs:
        if run.segment not in split_of:
            raise InputError(f"{run.events}: segment {run.segment!r} is not in the configured segments")
    missing = sorted(set(split_of) - {run.segment for run in runs})
    if missing:
        raise InputError(f"{subject_dir}: no runs for segments {missing}")

    space = make_space(runs[0].bold, mask_path, fmri)
    kept, pairs = zip(*[plan_run(space, run, tr, fmri) for run in runs], strict=True)  # every header checked first
    average = {"train": fmri.average_repeats.train, "test": fmri.average_repeats.test}
    plan = plan_rows(runs, pairs, split_of, average)

    scratch_path = out_path.with_name(f".{out_path.name}.scratch-{os.getpid()}.h5")
    try:
        # Every write covers whole chunks (one row each) and each row is read back at most once per run:
        # HDF5's chunk cache would only hold memory (about a run's worth over a subject).
        with (
            atomic_h5(out_path, "fmri", fmri.to_dict(), rdcc_nbytes=0) as f,
            h5py.File(scratch_path, "w", rdcc_nbytes=0) as scratch,
        ):
            bold = {}
            for split, rows in plan.items():
                group = f.create_group(split)
                bold[split] = group.create_dataset(
                    "bold",
                    (len(rows.keys),) + space.shape,
                    np.float32,
                    chunks=(1,) + space.shape if rows.keys else None,
                )
                write_keys(group, [k[0] for k in rows.keys], [k[1] for k in rows.keys])
                LOG.info("%s %s: %d samples", subject, split, len(rows.keys))
            usable, tsnr, reliability = stream_runs(subject, runs, kept, plan, space, bold, scratch, tr, fmri)
            usable = select_voxels(subject, runs, space, usable, reliability, fmri.reliability)
            keep = space.samples(np.ones((1, usable.size), np.float32), usable)[0]
            for split, rows in plan.items():
                if rows.average or not usable.all():  # sums → means; dropped voxels → 0
                    scale_rows(bold[split], keep, np.array(rows.counts, np.float32))
            f.create_dataset("mask", data=(keep > 0).astype(np.uint8))
            qc = f.create_group("qc")  # per voxel of the ROI mask / selected grayordinate
            qc.create_dataset("tsnr", data=tsnr.astype(np.float32))
            qc.create_dataset("reliability", data=reliability.astype(np.float32))
            qc.create_dataset("usable", data=usable.astype(np.uint8))
            set_attrs(
                f,
                {
                    "subject": subject,
                    "tr": tr,
                    "hrf_lag": fmri.hrf_lag,
                    "params": fmri.to_dict(),
                    "space": space_name(layout, space),
                    "voxel_selection": voxel_selection(fmri.reliability),
                    "n_runs": len(runs),
                    **space.attrs(),
                },
            )
    finally:
        scratch_path.unlink(missing_ok=True)


def stream_runs(
    subject: str,
    runs: list[Run],
    kept: tuple[tuple[int, int, int], ...],
    plan: dict[str, SplitRows],
    space: VolumeSpace | SurfaceSpace,
    bold: dict[str, h5py.Dataset],
    scratch: h5py.File,
    tr: float,
    fmri: FmriConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clean each run and write its samples into ``bold`` (summed where repeats are averaged) and into the
    scratch's odd/even repeat halves of the reliability split's segments; return the usable voxels (judged
    on the training runs, or on every run of a subject without any), the mean tSNR and the split-half
    reliability."""
    n_voxels = space.n_voxels
    everything = np.ones(n_voxels, bool)
    judged = set(plan["train"].targets) if "train" in plan and plan["train"].targets else set(range(len(runs)))
    source = plan.get(fmri.reliability.split, SplitRows(True))
    clips = {key: c for c, key in enumerate(dict.fromkeys(source.keys))}  # a clip's row in the halves
    halves = [
        scratch.create_dataset(f"half{h}", (max(len(clips), 1), n_voxels), np.float32, chunks=(1, n_voxels))
        for h in (0, 1)
    ]
    half_counts = np.zeros((2, max(len(clips), 1)))
    shown: dict[str, int] = defaultdict(int)
    usable = np.ones(n_voxels, bool)
    tsnr = np.zeros(n_voxels)
    for i, run in enumerate(tqdm(runs, desc=f"{subject} runs", mininterval=1.0)):
        series, ok, run_tsnr = read_clean_run(space, run, kept[i], tr, fmri)
        if i in judged:
            usable &= ok
        tsnr += run_tsnr
        for split, rows in plan.items():
            if i in rows.targets:
                first, volumes = rows.targets[i]
                add_rows(
                    bold[split],
                    first,
                    volumes,
                    lambda v, series=series: space.samples(series[v], everything),
                    rows.average,
                )
        if i in source.targets:  # odd and even repeats of a segment, for the split-half reliability
            first, volumes = source.targets[i]
            parity = shown[run.segment] % 2
            shown[run.segment] += 1
            at = np.array([clips[key] for key in source.keys[first : first + len(volumes)]])
            order = np.argsort(at)  # h5py writes rows given in increasing order, a block at a time
            for r in range(0, len(order), ROWS):
                block = order[r : r + ROWS]
                halves[parity][at[block]] = halves[parity][at[block]] + series[np.asarray(volumes)[block]]
            half_counts[parity, at] += 1
        del series  # released before the next run is read: one run in memory, not two
    split_half = SplitHalf(n_voxels)
    both = np.flatnonzero((half_counts > 0).all(axis=0))
    for r in range(0, len(both), ROWS):
        block = both[r : r + ROWS]
        split_half.add(*(halves[h][block] / half_counts[h, block, None] for h in (0, 1)))
    return usable, tsnr / len(runs), split_half.r()


def voxel_selection(selection: FmriReliabilityConfig) -> str:
    """What chose the kept voxels, for the artifact and the metrics tables: ``usable`` (finite and varying
    in the training runs), ``train-reliability`` or ``test-reliability`` (test data chose them)."""
    return f"{selection.split}-reliability" if selection.select else "usable"


def select_voxels(
    subject: str,
    runs: list[Run],
    space: VolumeSpace | SurfaceSpace,
    usable: np.ndarray,
    reliability: np.ndarray,
    selection: FmriReliabilityConfig,
) -> np.ndarray:
    """Usable voxels, narrowed to the reliable ones when configured; none left is an error."""
    if selection.select:
        if not np.isfinite(reliability).any():
            raise InputError(
                f"{runs[0].bold.parent}: reliability selection needs {selection.split} segments shown at least "
                "twice (3 clips or more)"
            )
        if selection.split == "test":
            LOG.warning(
                "%s: voxels selected by the TEST segments' repeat reliability (reliability.split: test)", subject
            )
        reliable = fisher_z(np.nan_to_num(reliability, nan=-1.0)) >= selection.threshold
        LOG.info(
            "%s: %d of %d voxels reach repeat reliability z >= %g",
            subject,
            int((reliable & usable).sum()),
            usable.size,
            selection.threshold,
        )
        usable = usable & reliable
    if not usable.any():
        where = space.mask_path if isinstance(space, VolumeSpace) else f"the {space.structures} grayordinates"
        raise InputError(
            f"{subject}: no usable voxels in {where} (all non-finite or constant in some run "
            f"under {runs[0].bold.parent})"
        )
    dropped = int((~usable).sum())
    if dropped:
        LOG.warning("%s: dropped %d of %d voxels (non-finite, constant or unreliable)", subject, dropped, usable.size)
    return usable


def space_name(layout: RunLayout, space: VolumeSpace | SurfaceSpace) -> str:
    """What coordinates the samples are in, for readers of the artifact."""
    if isinstance(space, SurfaceSpace):
        return "CIFTI grayordinates (" + ", ".join(space.structures) + ")"
    if layout.layout == "wen2018":
        return "MNI152"
    return layout.bids.space or layout.layout
