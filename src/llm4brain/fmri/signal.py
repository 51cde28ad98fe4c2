"""Per-run signal cleaning, one function per operation (in the spirit of nilearn's ``signal``)."""

from __future__ import annotations

import numpy as np

COLUMNS = 2048  # voxels cleaned at a time: float64 work arrays stay small next to the run itself


def column_blocks(n: int) -> list[slice]:
    return [slice(c, min(c + COLUMNS, n)) for c in range(0, n, COLUMNS)]


def cosine_drift(n: int, tr: float, cutoff_hz: float) -> np.ndarray:
    """(T, K) discrete-cosine regressors of every frequency below ``cutoff_hz`` (SPM's high-pass basis)."""
    k = int(np.floor(2 * n * tr * cutoff_hz))
    t = np.arange(n)
    return (
        np.stack([np.cos(np.pi * (2 * t + 1) * j / (2 * n)) for j in range(1, k + 1)], axis=1)
        if k
        else np.zeros((n, 0))
    )


def nuisance_basis(n: int, order: int, extra: np.ndarray | None = None) -> np.ndarray:
    """(T, K) orthonormal basis of a Legendre polynomial of ``order`` plus ``extra`` regressors (cosine
    drifts, confounds). Fitting them together keeps one from re-introducing what another removed; collinear
    regressors are fine (the basis spans the design, whatever its rank)."""
    design = np.polynomial.legendre.legvander(np.linspace(-1.0, 1.0, n), order)
    if extra is not None and extra.shape[1]:
        design = np.concatenate([design, extra], axis=1)
    if n <= design.shape[1]:
        raise ValueError(f"cannot fit {design.shape[1]} nuisance regressors to {n} time points")
    u, sv, _ = np.linalg.svd(design, full_matrices=False)
    return u[:, sv > sv[0] * n * np.finfo(float).eps]


def residualize(block: np.ndarray, basis: np.ndarray) -> None:
    """Replace the float64 (T, v) ``block`` by its least-squares residual on ``basis``, in place."""
    block -= basis @ (basis.T @ block)


def standardize(block: np.ndarray) -> np.ndarray:
    """Z-score the float64 (T, v) ``block`` per column in place (sample std, ddof=1, as nilearn's
    ``zscore_sample``); return the usable columns. Constant columns are set to zero and flagged ``False``
    rather than divided by zero."""
    mean = block.mean(axis=0)
    block -= mean
    std = np.sqrt(np.einsum("tv,tv->v", block, block) / (len(block) - 1))
    good = np.isfinite(std) & (std > 1e-8 * (np.abs(mean) + 1.0))
    block /= np.where(good, std, 1.0)
    block[:, ~good] = 0.0
    return good
