"""``extract_frames``: F frames per TR window of one stimulus, chosen from the stream's own timestamps.

Frame ``j`` of TR ``k`` is the frame on screen at ``t = (k + (j + 0.5) / F) · TR`` seconds (F from
``video.frames_per_tr``, or ``video.fps`` × TR: see ``video.sampling``), i.e. the frame
whose presentation interval ``[start, end)`` contains ``t``. Indices come from the container's timestamps,
never from an assumed frame rate, so variable-frame-rate files map correctly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llm4brain.artifacts import atomic_h5, set_attrs
from llm4brain.runtime import LOG
from llm4brain.sections import VideoConfig
from llm4brain.video.preprocessing import geometric
from llm4brain.video.readers import VideoError, probe, read_frames
from llm4brain.video.sampling import frame_indices, frames_per_tr, sample_times

__all__ = ["VideoError", "extract_frames", "frame_indices", "sample_times"]


def extract_frames(
    video_path: str | Path,
    out_path: str | Path,
    tr: float,
    video: VideoConfig,
    input_config: dict[str, Any],
    threads: int = 1,
) -> None:
    """Write ``/frames`` uint8 (n_tr, F, h, w, 3), resized and cropped for the vision model, and ``/tr`` for
    every whole TR the video covers. ``input_config`` is the vision model's (``preprocessing.read_config``);
    ``threads`` resize while decoding goes on.

    Args:
        video_path: the stimulus video (``{data.stimuli}/{segment}.mp4``); its file name's stem names the
            segment.
        out_path: the frames artifact to write (``results/frames/{segment}.h5``); it appears only once
            complete.
        tr: the repetition time in seconds (``data.tr``): one clip of F frames per whole TR the video covers.
        video: the ``video`` config section; reads ``reader``, ``frames_per_tr`` and ``fps`` (F per TR).
        input_config: the vision model's timm data config (``input_size`` as ``(3, h, w)``, ``crop_pct``,
            ``interpolation``), as ``preprocessing.read_config`` reads ``results/features/vision_input.json``.
        threads: threads that resize decoded frames to the model's input while decoding goes on
            (``video.extract_threads``).

    Raises:
        VideoError: the video cannot be opened or decoded, or is shorter than one TR.
        ValueError: ``video.fps`` × ``tr`` is not a whole number of frames.
    """
    info = probe(video_path, video.reader)
    n_tr = int(np.floor(info.end / tr + 1e-6))
    if n_tr == 0:
        raise VideoError(f"{info.path}: {info.end:.2f} s is shorter than one TR ({tr:g} s)")
    per_tr = frames_per_tr(video, tr)
    times = sample_times(n_tr, tr, per_tr)
    indices = frame_indices(info.starts, times)
    frames = read_frames(info, indices, geometric(input_config), threads)
    with atomic_h5(out_path, "frames", video.to_dict()) as f:
        f.create_dataset("frames", data=frames, chunks=(1,) + frames.shape[1:])
        f.create_dataset("tr", data=np.arange(n_tr, dtype=np.int32))
        f.create_dataset("frame_index", data=indices.astype(np.int64))
        f.create_dataset("frame_time", data=times)
        set_attrs(
            f,
            {
                "segment": info.path.stem,
                "source": str(info.path),
                "fps": info.n_frames / info.end,
                "n_frames": info.n_frames,
                "duration": info.end,
                "tr_seconds": tr,
                "reader": info.reader,
                "codec": info.codec,
                "container": info.container,
                "variable_rate": info.variable_rate,
                "input_size": list(input_config["input_size"]),
                "crop_pct": input_config["crop_pct"],
                "interpolation": input_config["interpolation"],
            },
        )
    LOG.info(
        "%s: %s in %s read with %s, %d TRs x %d frames",
        info.path.name,
        info.codec,
        info.container,
        info.reader,
        n_tr,
        per_tr,
    )
