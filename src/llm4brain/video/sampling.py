"""Which instants of a stimulus are sampled: F frames inside each TR window, or a fixed rate.

Numpy only, so the workflow's DAG build can check a configured rate without importing a decoder.
"""

from __future__ import annotations

import numpy as np

from llm4brain.sections import VideoConfig


def frames_per_tr(video: VideoConfig, tr: float) -> int:
    """F for the ``video`` section: ``frames_per_tr``, or ``fps`` × TR when a fixed rate is configured."""
    if video.fps is None:
        return video.frames_per_tr
    n = video.fps * tr
    if round(n) < 1 or abs(n - round(n)) > 1e-6:
        raise ValueError(
            f"config video.fps: {video.fps:g} frames/s x TR {tr:g} s = {n:g} frames per TR; "
            "the rate must give a whole number of frames per TR"
        )
    return int(round(n))


def sample_times(n_tr: int, tr: float, frames_per_tr: int) -> np.ndarray:
    """(n_tr, F) times in seconds, evenly spaced inside each TR window (centres of F equal bins): at a
    fixed rate of F / TR frames per second, the instants ``(j + 0.5) / rate`` after each TR onset."""
    offsets = (np.arange(frames_per_tr) + 0.5) / frames_per_tr
    return (np.arange(n_tr)[:, None] + offsets[None, :]) * tr


def frame_indices(starts: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the frame shown at each time, given the frames' presentation start times (sorted)."""
    return np.searchsorted(starts, times, side="right") - 1
