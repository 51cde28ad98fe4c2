"""Per-run signal cleaning, one function per operation (in the spirit of nilearn's ``signal``)."""

from __future__ import annotations

import numpy as np


def detrend(data: np.ndarray, order: int = 2) -> np.ndarray:
    """Remove a polynomial trend of ``order`` from each column of ``data`` (T, V); order 0 removes the mean.

    The fit uses a Legendre basis on [-1, 1], which is well conditioned for the orders used in fMRI (≤ 4
    in Wen et al.'s official code).
    """
    if data.ndim != 2:
        raise ValueError(f"detrend expects (time, voxels), got shape {data.shape}")
    if order < 0:
        raise ValueError(f"detrend order must be >= 0, got {order}")
    n = data.shape[0]
    if n <= order:
        raise ValueError(f"cannot fit an order-{order} trend to {n} time points")
    basis = np.polynomial.legendre.legvander(np.linspace(-1.0, 1.0, n), order)  # (T, order + 1)
    coef, *_ = np.linalg.lstsq(basis, data.astype(np.float64), rcond=None)
    return (data - basis @ coef).astype(np.float32)


def zscore(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Z-score each column over time (sample std, ddof=1); return the data and a mask of usable columns.

    Constant columns cannot be standardised: they are set to zero and flagged ``False`` rather than
    divided by zero.
    """
    mean = data.mean(axis=0, dtype=np.float64)
    std = data.std(axis=0, ddof=1, dtype=np.float64)
    ok = np.isfinite(std) & (std > 1e-8 * (np.abs(mean) + 1.0))
    out = np.zeros_like(data, dtype=np.float32)
    out[:, ok] = ((data[:, ok] - mean[ok]) / std[ok]).astype(np.float32)
    return out, ok


def cosine_drift(n: int, tr: float, cutoff_hz: float) -> np.ndarray:
    """(T, K) discrete-cosine regressors of every frequency below ``cutoff_hz`` (SPM's high-pass basis)."""
    k = int(np.floor(2 * n * tr * cutoff_hz))
    t = np.arange(n)
    return np.stack([np.cos(np.pi * (2 * t + 1) * j / (2 * n)) for j in range(1, k + 1)], axis=1) if k else \
        np.zeros((n, 0))


def regress_out(data: np.ndarray, order: int, extra: np.ndarray | None = None) -> np.ndarray:
    """Residual of each column of ``data`` (T, V) after one least-squares fit of a Legendre polynomial of
    ``order`` plus ``extra`` regressors (T, K) such as cosine drifts and confounds: fitting them together
    keeps one from re-introducing what another removed."""
    n = data.shape[0]
    design = np.polynomial.legendre.legvander(np.linspace(-1.0, 1.0, n), order)
    if extra is not None and extra.shape[1]:
        design = np.concatenate([design, extra], axis=1)
    if n <= design.shape[1]:
        raise ValueError(f"cannot fit {design.shape[1]} nuisance regressors to {n} time points")
    coef, *_ = np.linalg.lstsq(design, data.astype(np.float64), rcond=None)
    return (data - design @ coef).astype(np.float32)
