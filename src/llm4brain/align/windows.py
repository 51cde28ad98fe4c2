"""Windows of consecutive TRs: the encoder's input is a sample's volume and the next ``W - 1`` of its run."""

from __future__ import annotations

import numpy as np


def run_ends(segment: np.ndarray, tr: np.ndarray) -> np.ndarray:
    """Per row, the last row of its stretch of consecutive TRs of one segment (preprocess_fmri writes each run's
    clips, or each averaged segment's, consecutively): a window never reaches past it."""
    segment, tr = np.asarray(segment), np.asarray(tr)
    n = len(tr)
    continues = np.zeros(n, bool)
    continues[1:] = (segment[1:] == segment[:-1]) & (tr[1:] == tr[:-1] + 1)
    starts = np.flatnonzero(~continues)
    stops = np.append(starts[1:], n)[: len(starts)]  # none for a split without rows
    return np.repeat(stops - 1, stops - starts)


def window_rows(rows: np.ndarray, run_end: np.ndarray, window: int) -> np.ndarray:
    """(n, W) rows of each row's window: it and the next ``W - 1`` of its run, repeating the run's last."""
    rows = np.asarray(rows, np.int64)
    return np.minimum(rows[:, None] + np.arange(window), run_end[rows][:, None])


def windows(samples: np.ndarray, keys: list[tuple[str, int]], window: int) -> np.ndarray:
    """(n, *grid) samples → (n, W, *grid), every row's window (:func:`window_rows`), in memory. Window 1 is a
    view, not a copy."""
    if window == 1:
        return samples[:, None]
    segment, tr = zip(*keys, strict=True) if keys else ((), ())
    return samples[window_rows(np.arange(len(keys)), run_ends(np.array(segment), np.array(tr)), window)]
