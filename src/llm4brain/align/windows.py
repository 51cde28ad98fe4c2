"""Windows of consecutive TRs: the encoder's input is a sample's volume and the next ``W - 1`` of its run."""

from __future__ import annotations

import numpy as np


def windows(samples: np.ndarray, keys: list[tuple[str, int]], window: int) -> np.ndarray:
    """(n, *grid) samples → (n, W, *grid). Row i's w-th volume is the row of clip ``(segment, tr + w)`` that
    follows it (preprocess_fmri writes each run's clips, or each averaged segment's, consecutively); at a
    run's end the last volume repeats. Window 1 is a view, not a copy."""
    if window == 1:
        return samples[:, None]
    index = np.repeat(np.arange(len(keys))[:, None], window, axis=1)
    for w in range(1, window):
        for i, (segment, tr) in enumerate(keys):
            j = index[i, w - 1] + 1
            index[i, w] = j if j < len(keys) and keys[j] == (segment, tr + w) else index[i, w - 1]
    return samples[index]


def run_windows(volumes: list[int], n_volumes: int, window: int) -> np.ndarray:
    """(n, W) volume indices of one run: each paired volume and the next ``W - 1``, repeating the run's last."""
    return np.minimum(np.asarray(volumes)[:, None] + np.arange(window)[None, :], n_volumes - 1)
