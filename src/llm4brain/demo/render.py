"""Render demo clips to frames and encode them as H.264 mp4 with PyAV."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from llm4brain.demo.scenes import BACKGROUNDS, COLOURS, COUNTS, Scene

SPEED = 0.35  # fraction of the frame an object crosses per second


def _shape_mask(shape: str, size: int, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    half = size / 2
    if shape == "circle":
        return dy**2 + dx**2 <= half**2
    if shape == "square":
        return (np.abs(dy) <= half) & (np.abs(dx) <= half)
    # triangle pointing up: inside when below the two slanted edges and above the base
    return (dy <= half) & (dy >= -half) & (np.abs(dx) <= (dy + half) / 2)


def render_frame(scene: Scene, t: float, size: int, seed: int) -> np.ndarray:
    """One RGB frame (size, size, 3) of ``scene`` at ``t`` seconds after the scene started."""
    rng = np.random.default_rng(seed)
    frame = np.empty((size, size, 3), np.uint8)
    frame[:] = BACKGROUNDS[scene.background]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    obj = int(size * (0.16 if scene.size == "small" else 0.3))
    n = COUNTS.index(scene.count) + 1
    step = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}[scene.motion]
    for _ in range(n):
        cy0, cx0 = rng.uniform(0.2, 0.8, size=2) * size
        cy = (cy0 + step[0] * SPEED * size * t) % size
        cx = (cx0 + step[1] * SPEED * size * t) % size
        frame[_shape_mask(scene.shape, obj, yy, xx, cy, cx)] = COLOURS[scene.colour]
    return frame


def render_segment(timeline: list[Scene], tr: float, fps: int, size: int, seed: int) -> np.ndarray:
    """All frames (n_frames, size, size, 3) of a segment whose TR-clips follow ``timeline``."""
    n_frames = int(round(len(timeline) * tr * fps))
    starts: list[int] = []
    ids: list[int] = []
    for k in range(len(timeline)):
        if k == 0 or timeline[k] is not timeline[k - 1]:
            start, scene_id = k, (ids[-1] + 1 if ids else 0)
        starts.append(start)
        ids.append(scene_id)
    frames = np.empty((n_frames, size, size, 3), np.uint8)
    for i in range(n_frames):
        t = i / fps
        k = min(int(t // tr), len(timeline) - 1)
        frames[i] = render_frame(timeline[k], t - starts[k] * tr, size, seed * 1000 + ids[k])
    return frames


def write_mp4(frames: np.ndarray, path: str | Path, fps: int) -> None:
    """Encode frames as H.264 (yuv420p) so decord and PyAV both read them frame-exactly.

    libx264 runs its portable C code (``asm=0``): its AVX-512 code path encoded the same frames to different
    streams from one call to the next (it depends on what the heap held before), and each SIMD level chooses
    other pixels, so with assembly the demo's stimuli would differ between runs and between CPUs.
    """
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast", "threads": "1", "x264-params": "asm=0"}
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
