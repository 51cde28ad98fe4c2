"""Top-k identification with ties broken at random, shared by latent (align) and caption (evaluate)
identification.

A row's own candidate is "in the top k" with the probability that it ranks below k when the candidates that
score exactly as high as it are put in random order: with ``g`` candidates strictly better and ``t`` others
tied, its rank is uniform on ``g … g + t``, so the hit rate is ``clip((k - g) / (t + 1), 0, 1)``. Counting
ties as hits would call a caption that scores 0 against every clip "top-1"; this rule gives such rows chance.
"""

from __future__ import annotations

import numpy as np


def topk_hits(sim: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """Expected top-``k`` hit of each row under random tie-breaking (values in [0, 1]).

    ``sim[..., j]`` is a row's similarity to candidate ``j``; ``own`` (broadcast against ``sim[..., 0]``)
    its own candidate's similarity, which ``sim`` must not also hold (pass the other candidates only).
    """
    own = np.asarray(own)[..., None]
    better = (sim > own).sum(-1)
    tied = (sim == own).sum(-1)
    return np.clip((k - better) / (tied + 1), 0.0, 1.0)


def topk_accuracy(sim: np.ndarray, own_index: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    """Top-k accuracies (ties broken at random, in expectation) and chance, over all ``sim.shape[1]``
    candidates; row ``i``'s own candidate is column ``own_index[i]``.

    Args:
        sim: (n_rows, n) similarity of each row to each candidate, higher meaning closer.
        own_index: (n_rows,) int, the column of each row's own candidate.
        ks: the k of each top-k accuracy.

    Returns:
        ``n_way`` (n); for each k, ``top{k}`` (the expected share of rows whose own candidate ranks in the
            top k) and its chance ``chance_top{k}`` (``min(k, n) / n``).
    """
    sim = np.asarray(sim, dtype=float)
    n_rows, n = sim.shape
    own = sim[np.arange(n_rows), own_index]
    others = sim[np.arange(n)[None, :] != np.asarray(own_index)[:, None]].reshape(n_rows, n - 1)
    out: dict[str, float] = {"n_way": n}
    for k in ks:
        out[f"top{k}"] = float(topk_hits(others, own, k).mean())
        out[f"chance_top{k}"] = min(k, n) / n
    return out
