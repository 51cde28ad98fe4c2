"""Video stage throughput against its goals: decoding and I/O must not be what bounds it.

    .venv/bin/python benchmarks/video.py

Extraction: ``extract_frames`` (8 frames per 2 s TR, resized for ViT-B/16) on a 60 s 640×360 30 fps clip,
H.264 in MP4 (decord), MPEG-4 Part 2 with B-frames in MP4 (PyAV seek) and in AVI (sequential PyAV), against
a sequential PyAV decode to RGB of every frame of the same file; goal ≥ 0.8× its frames/s. Caching:
``cache_features`` (HDF5 in and out, normalisation in a DataLoader worker for ViT-B/16, forward)
against the bare model forward on preloaded, preprocessed tensors; goal ≥ 0.9×, for the demo ViT and a
ViT-B/16-size model. Frames/s are source frames covered per second; ratios ≥ 1.0 of the goal meet it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from llm4brain.artifacts import open_artifact
from llm4brain.video.features import build_vision_model, cache_features
from llm4brain.video.frames import extract_frames
from llm4brain.video.preprocessing import data_config, photometric

SECONDS, FPS, WIDTH, HEIGHT, TR = 60, 30, 640, 360, 2.0
MODELS = {
    "demo ViT": {"source": "timm", "name": "vit_tiny_patch16_224", "weights": None,
                 "kwargs": {"img_size": 64, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2}},
    "ViT-B/16": {"source": "timm", "name": "vit_base_patch16_224", "weights": None, "kwargs": {}},
}
CACHE_SECONDS = {"demo ViT": SECONDS, "ViT-B/16": 8}  # ViT-B/16 on CPU: a few TRs keep the run short


WORKERS = {"demo ViT": 0, "ViT-B/16": 1}  # as configured: the demo reads in the job, real models in a worker


def params(model: str) -> dict:
    return {"frames_per_tr": 8, "fps": None, "reader": "auto", "crop_pct": None, "batch_size": 32,
            "workers": WORKERS[model], "device": "cpu", "cache": "vit_tokens", "model": MODELS[model]}


def write_clip(path: Path, codec: str, options: dict[str, str], seconds: int = SECONDS) -> None:
    """Moving gradients and blocks: content that changes every frame, as a film does."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt, stream.options = WIDTH, HEIGHT, "yuv420p", options
        for i in range(seconds * FPS):
            frame = np.stack([(xx + 4 * i) % 256, (yy + 2 * i) % 256, ((xx // 40 + yy // 40 + i // 15) % 2) * 255],
                             axis=-1).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def sequential_decode_seconds(path: Path) -> float:
    start = time.perf_counter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frame.to_ndarray(format="rgb24")
    return time.perf_counter() - start


def bare_forward_seconds(model: torch.nn.Module, batches: list[torch.Tensor]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for x in batches:
            model.forward_features(x)
    return time.perf_counter() - start


def row(name: str, measured: float, baseline: float, goal: float) -> None:
    ratio = measured / baseline
    print(f"{name:40s} {measured:10.1f} {baseline:10.1f} {ratio:6.2f} {goal:5.2f} {ratio / goal:6.2f}")


def main() -> None:
    torch.set_num_threads(1)  # what cache_features uses per job
    data_config(params("demo ViT"))  # import timm once, outside every timing: a job pays it once per segment
    print(f"{'stage':40s} {'frames/s':>10s} {'baseline':>10s} {'ratio':>6s} {'goal':>5s} {'/goal':>6s}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clips = {"H.264 MP4": (tmp / "h264.mp4", "libx264", {"preset": "veryfast", "bf": "2"}),
                 "MPEG-4 Part 2 MP4": (tmp / "mpeg4.mp4", "mpeg4", {"bf": "2", "qscale": "3"}),
                 "MPEG-4 Part 2 AVI": (tmp / "mpeg4.avi", "mpeg4", {"bf": "2", "qscale": "3"})}
        for name, (path, codec, options) in clips.items():
            write_clip(path, codec, options)
            n = SECONDS * FPS
            baseline = n / min(sequential_decode_seconds(path) for _ in range(2))
            config = data_config(params("ViT-B/16"))  # resolved once per workflow (rule vision_input)
            start = time.perf_counter()
            extract_frames(path, tmp / "frames.h5", TR, params("ViT-B/16"), config)
            row(f"extract {name} (ViT-B/16 input)", n / (time.perf_counter() - start), baseline, 0.8)
        for k, name in enumerate(MODELS):
            clip, source = tmp / f"model{k}.mp4", tmp / f"model{k}.h5"
            write_clip(clip, "libx264", {"preset": "veryfast"}, CACHE_SECONDS[name])
            extract_frames(clip, source, TR, params(name), data_config(params(name)))
            with open_artifact(source, "frames", ("frames",)) as f:
                frames = torch.from_numpy(f["frames"][:])
            flat = frames.reshape((-1,) + frames.shape[2:])
            model = build_vision_model(params(name), seed=0)
            prepare = photometric(data_config(params(name)))
            batches = [prepare(flat[i : i + 32]) for i in range(0, len(flat), 32)]
            bare = len(flat) / bare_forward_seconds(model, batches)
            start = time.perf_counter()
            cache_features(source, tmp / "features.h5", params(name), seed=0)
            row(f"cache {name}", len(flat) / (time.perf_counter() - start), bare, 0.9)


if __name__ == "__main__":
    main()
