"""``extract_frames``: F frames per TR window of one stimulus, chosen from the stream's own timestamps.

Frame ``j`` of TR ``k`` is the frame on screen at ``t = (k + (j + 0.5) / F) · TR`` seconds, i.e. the frame
whose presentation interval ``[start, end)`` contains ``t``. Indices come from the container's timestamps,
never from an assumed frame rate, so variable-frame-rate files map correctly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llm4brain.artifacts import atomic_h5, set_attrs
from llm4brain.runtime import LOG


class VideoError(ValueError):
    """A stimulus file cannot be used; the message names the file."""


def sample_times(n_tr: int, tr: float, frames_per_tr: int) -> np.ndarray:
    """(n_tr, F) times in seconds, evenly spaced inside each TR window (centres of F equal bins)."""
    offsets = (np.arange(frames_per_tr) + 0.5) / frames_per_tr
    return (np.arange(n_tr)[:, None] + offsets[None, :]) * tr


def frame_indices(starts: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the frame shown at each time, given the frames' presentation start times (sorted)."""
    return np.searchsorted(starts, times, side="right") - 1


def extract_frames(video_path: str | Path, out_path: str | Path, tr: float, params: dict[str, Any]) -> None:
    """Write ``/frames`` uint8 (n_tr, F, H, W, 3) and ``/tr`` for every whole TR the video covers."""
    import decord

    video_path = Path(video_path)
    try:
        reader = decord.VideoReader(str(video_path), ctx=decord.cpu(0), num_threads=1)
    except Exception as err:  # decord raises DECORDError for unreadable files
        raise VideoError(f"{video_path}: cannot open video ({err})") from err
    n_frames = len(reader)
    if n_frames == 0:
        raise VideoError(f"{video_path}: no decodable frames")
    stamps = reader.get_frame_timestamp(np.arange(n_frames))  # (n, 2): start, end in seconds
    starts, end = stamps[:, 0], float(stamps[-1, 1])
    if np.any(np.diff(starts) <= 0):
        raise VideoError(f"{video_path}: frame timestamps are not increasing")
    n_tr = int(np.floor(end / tr + 1e-6))
    if n_tr == 0:
        raise VideoError(f"{video_path}: {end:.2f} s is shorter than one TR ({tr:g} s)")
    times = sample_times(n_tr, tr, params["frames_per_tr"])
    indices = frame_indices(starts, times)
    frames = reader.get_batch(indices.ravel().tolist()).asnumpy()
    frames = frames.reshape(indices.shape + frames.shape[1:])
    with atomic_h5(out_path, "frames", params) as f:
        f.create_dataset("frames", data=frames, chunks=(1,) + frames.shape[1:])
        f.create_dataset("tr", data=np.arange(n_tr, dtype=np.int32))
        f.create_dataset("frame_index", data=indices.astype(np.int64))
        f.create_dataset("frame_time", data=times)
        set_attrs(f, {"segment": video_path.stem, "source": str(video_path), "fps": n_frames / end,
                      "n_frames": n_frames, "duration": end, "tr_seconds": tr, "reader": "decord"})
    LOG.info("%s: %d TRs x %d frames", video_path.name, n_tr, params["frames_per_tr"])
