"""``preprocess_fmri``: one subject's runs → ``results/fmri/{subject}.h5``.

Per run: mask, polynomial detrend, z-score per voxel, then pair volume ``(onset + tr·TR + hrf_lag) / TR``
with the clip ``(segment, tr)``.  Repeats of a segment are averaged where the config asks (test, by
default: it is what makes test responses reliable).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from llm4brain.artifacts import atomic_h5, set_attrs, write_keys
from llm4brain.fmri.runs import InputError, Run, bids_runs, check_id, load_bold, load_mask, read_confounds
from llm4brain.fmri.signal import cosine_drift, regress_out, zscore
from llm4brain.runtime import LOG


def pair_run(run: Run, n_volumes: int, tr: float, hrf_lag: float) -> list[tuple[int, int]]:
    """``(tr index, volume index)`` pairs for one run: clip k is seen in volume (onset + k·TR + lag) / TR."""
    n_tr = int(np.floor(run.duration / tr + 1e-6))
    pairs = [(k, int(round((run.onset + k * tr + hrf_lag) / tr))) for k in range(n_tr)]
    if n_tr == 0 or pairs[-1][1] >= n_volumes:
        raise InputError(
            f"{run.bold}: run has {n_volumes} volumes but segment {run.segment!r} (onset {run.onset:g} s, "
            f"{n_tr} TRs, lag {hrf_lag:g} s) needs volume {pairs[-1][1] if pairs else 0}"
        )
    return pairs


def temporal_snr(series: np.ndarray) -> np.ndarray:
    """Per-voxel temporal SNR of a raw (T, V) run: mean over time / standard deviation over time."""
    std = series.std(axis=0)
    return np.divide(series.mean(axis=0), std, out=np.zeros(series.shape[1]), where=std > 0)


def split_half_reliability(repeats: dict[tuple[str, int], list[np.ndarray]]) -> np.ndarray:
    """Per-voxel Pearson r, over clips, between the mean of odd and of even repeats (Wen et al.'s repeat
    reliability); NaN where no clip was shown twice."""
    pairs = [(np.mean(v[0::2], axis=0), np.mean(v[1::2], axis=0)) for v in repeats.values() if len(v) >= 2]
    if len(pairs) < 3:
        n = len(next(iter(repeats.values()))[0]) if repeats else 0
        return np.full(n, np.nan)
    a, b = (np.stack(x) for x in zip(*pairs))
    a, b = a - a.mean(0), b - b.mean(0)
    denom = np.sqrt((a**2).sum(0) * (b**2).sum(0))
    return np.divide((a * b).sum(0), denom, out=np.full(a.shape[1], np.nan), where=denom > 0)


def clean_run(series: np.ndarray, params: dict[str, Any], tr: float,
              confounds: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One run's (T, V) masked series → nuisance-regressed (polynomial of ``detrend_order``, cosine drifts
    below ``high_pass`` Hz, confounds) and z-scored series, and the voxels that are usable (finite and not
    constant); unusable voxels are zeroed, never divided by."""
    finite = np.isfinite(series).all(axis=0)
    series = np.where(finite, series, 0.0).astype(np.float32)
    extra = [] if confounds is None else [(confounds - confounds.mean(0)) / (confounds.std(0) + 1e-8)]
    if params["high_pass"]:
        extra.append(cosine_drift(series.shape[0], tr, params["high_pass"]))
    series = regress_out(series, params["detrend_order"], np.concatenate(extra, axis=1) if extra else None)
    if params["zscore"]:
        series, ok = zscore(series)
        finite &= ok
    return series, finite


def fisher_z(r: np.ndarray) -> np.ndarray:
    return np.arctanh(np.clip(r, -0.999999, 0.999999))


def preprocess_subject(
    subject: str,
    subject_dir: str | Path,
    mask_path: str | Path,
    out_path: str | Path,
    segments: dict[str, list[str]],
    tr: float,
    params: dict[str, Any],
    bids: dict[str, Any] | None = None,
) -> None:
    """Preprocess every run of ``subject`` and write the per-split samples atomically.

    ``params`` is the ``fmri`` config section (``detrend_order``, ``high_pass``, ``confounds``, ``zscore``,
    ``hrf_lag`` in seconds, ``average_repeats`` per split, ``reliability`` selection); ``bids`` the
    ``data.bids`` entity filters and events root.
    """
    check_id(subject, "subject id")
    subject_dir = Path(subject_dir)
    split_of = {seg: split for split, segs in segments.items() for seg in segs}
    bids = bids or {}
    entities = {key: bids.get(key) for key in ("task", "space", "desc")}
    events_root = Path(bids["events_root"]) if bids.get("events_root") else None
    runs = bids_runs(subject_dir, entities, events_root)
    for run in runs:
        if run.segment not in split_of:
            raise InputError(f"{run.events}: segment {run.segment!r} is not in the configured segments")
    shown = {run.segment for run in runs}
    missing = sorted(set(split_of) - shown)
    if missing:
        raise InputError(f"{subject_dir}: no runs for segments {missing}")

    mask = None
    usable = None
    tsnr: list[np.ndarray] = []
    samples: dict[str, dict[tuple[str, int], list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
    for run in tqdm(runs, desc=f"{subject} runs", mininterval=1.0):
        data, img = load_bold(run.bold, tr)
        if mask is None:
            mask = load_mask(Path(mask_path), img, run.bold)
            usable = np.ones(int(mask.sum()), bool)
            affine = img.affine
        elif data.shape[:3] != mask.shape:
            raise InputError(f"{run.bold}: grid {data.shape[:3]} differs from the subject's first run {mask.shape}")
        raw = data[mask].T
        tsnr.append(temporal_snr(raw))
        confounds = read_confounds(run, params["confounds"], raw.shape[0]) if params["confounds"] else None
        series, finite = clean_run(raw, params, tr, confounds)
        usable &= finite
        for k, volume in pair_run(run, series.shape[0], tr, params["hrf_lag"]):
            samples[split_of[run.segment]][(run.segment, k)].append(series[volume])

    reliability = split_half_reliability(samples["test"])
    selection = params["reliability"]
    if selection["select"]:
        if not np.isfinite(reliability).any():
            raise InputError(f"{subject_dir}: reliability selection needs test segments shown at least twice")
        reliable = fisher_z(np.nan_to_num(reliability, nan=-1.0)) >= selection["threshold"]
        LOG.info("%s: %d of %d voxels reach repeat reliability z >= %g", subject, int((reliable & usable).sum()),
                 usable.size, selection["threshold"])
        usable &= reliable
    if mask is None or not usable.any():
        raise InputError(f"{subject_dir}: no usable voxels inside {mask_path} (all non-finite or constant)")
    dropped = int((~usable).sum())
    if dropped:
        LOG.warning("%s: dropped %d of %d voxels (non-finite or constant in some run)", subject, dropped, usable.size)
    keep = mask.copy()
    keep[mask] = usable
    with atomic_h5(out_path, "fmri", params) as f:
        for split in segments:
            keys, rows = [], []
            for key, values in sorted(samples[split].items()):
                if params["average_repeats"][split]:
                    keys.append(key)
                    rows.append(np.mean(values, axis=0))
                else:
                    keys += [key] * len(values)
                    rows += values
            bold = np.zeros((len(rows),) + mask.shape, np.float32)
            if rows:
                bold[:, mask] = np.stack(rows) * usable
            group = f.create_group(split)
            group.create_dataset("bold", data=bold, chunks=(1,) + mask.shape if rows else None)
            write_keys(group, [k[0] for k in keys], [k[1] for k in keys])
            LOG.info("%s %s: %d samples", subject, split, len(rows))
        f.create_dataset("mask", data=keep.astype(np.uint8))
        qc = f.create_group("qc")  # per voxel of the ROI mask, in mask order
        qc.create_dataset("tsnr", data=np.mean(tsnr, axis=0).astype(np.float32))
        qc.create_dataset("reliability", data=reliability.astype(np.float32))
        qc.create_dataset("usable", data=usable.astype(np.uint8))
        set_attrs(f, {"subject": subject, "tr": tr, "hrf_lag": params["hrf_lag"], "params": params,
                      "affine": affine.tolist(), "space": "demo", "layout": "volume", "n_runs": len(runs)})
