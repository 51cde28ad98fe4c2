"""Per-run signal cleaning, one function per operation (in the spirit of nilearn's ``signal``)."""

from __future__ import annotations

import numpy as np


COLUMNS = 4096  # voxels cleaned at a time: float64 work arrays stay small next to the run itself


def column_blocks(n: int) -> list[slice]:
    return [slice(c, min(c + COLUMNS, n)) for c in range(0, n, COLUMNS)]


def zscore(data: np.ndarray) -> np.ndarray:
    """Z-score each column of ``data`` (T, V) over time in place (sample std, ddof=1, as nilearn's
    ``zscore_sample``); return the mask of usable columns.

    Constant columns cannot be standardised: they are set to zero and flagged ``False`` rather than
    divided by zero.
    """
    ok = np.zeros(data.shape[1], bool)
    for cols in column_blocks(data.shape[1]):
        block = data[:, cols].astype(np.float64)
        mean, std = block.mean(axis=0), block.std(axis=0, ddof=1)
        good = np.isfinite(std) & (std > 1e-8 * (np.abs(mean) + 1.0))
        data[:, cols] = np.where(good, (block - mean) / np.where(good, std, 1.0), 0.0)
        ok[cols] = good
    return ok


def cosine_drift(n: int, tr: float, cutoff_hz: float) -> np.ndarray:
    """(T, K) discrete-cosine regressors of every frequency below ``cutoff_hz`` (SPM's high-pass basis)."""
    k = int(np.floor(2 * n * tr * cutoff_hz))
    t = np.arange(n)
    return np.stack([np.cos(np.pi * (2 * t + 1) * j / (2 * n)) for j in range(1, k + 1)], axis=1) if k else \
        np.zeros((n, 0))


def regress_out(data: np.ndarray, order: int, extra: np.ndarray | None = None) -> np.ndarray:
    """Replace each column of ``data`` (T, V), in place, by its residual after one least-squares fit of a
    Legendre polynomial of ``order`` plus ``extra`` regressors (T, K) such as cosine drifts and confounds:
    fitting them together keeps one from re-introducing what another removed. Collinear regressors are
    fine (the fit projects onto the span of the design)."""
    n = data.shape[0]
    design = np.polynomial.legendre.legvander(np.linspace(-1.0, 1.0, n), order)
    if extra is not None and extra.shape[1]:
        design = np.concatenate([design, extra], axis=1)
    if n <= design.shape[1]:
        raise ValueError(f"cannot fit {design.shape[1]} nuisance regressors to {n} time points")
    u, sv, _ = np.linalg.svd(design, full_matrices=False)
    basis = u[:, sv > sv[0] * n * np.finfo(float).eps]
    for cols in column_blocks(data.shape[1]):
        block = data[:, cols].astype(np.float64)
        data[:, cols] = block - basis @ (basis.T @ block)
    return data
