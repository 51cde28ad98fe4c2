"""Video stage: frame times → exact frame indices, extraction on a real H.264 file, feature caching."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from llm4brain.artifacts import open_artifact
from llm4brain.video.features import cache_features
from llm4brain.video.frames import VideoError, extract_frames, frame_indices, sample_times

BITS, BLOCK = 7, 8
VIDEO = {"frames_per_tr": 4, "batch_size": 16, "device": "cpu",
         "model": {"name": "vit_tiny_patch16_224", "weights": None,
                   "kwargs": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}}}


def coded_frame(index: int) -> np.ndarray:
    """A frame whose blocks spell ``index`` in binary (white = 1); survives lossy compression."""
    frame = np.zeros((BLOCK * 2, BLOCK * BITS, 3), np.uint8)
    for bit in range(BITS):
        if index >> bit & 1:
            frame[:, bit * BLOCK : (bit + 1) * BLOCK] = 255
    return frame


def read_code(frame: np.ndarray) -> int:
    return sum(1 << bit for bit in range(BITS) if frame[:, bit * BLOCK : (bit + 1) * BLOCK].mean() > 127)


def write_coded_mp4(path: Path, n_frames: int, fps: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = BLOCK * BITS, BLOCK * 2, "yuv420p"
        stream.options = {"crf": "10", "bf": "2"}
        for i in range(n_frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(coded_frame(i), format="rgb24")))
        container.mux(stream.encode())


def test_sample_times_are_window_centres():
    times = sample_times(2, 2.0, 4)
    np.testing.assert_allclose(times, [[0.25, 0.75, 1.25, 1.75], [2.25, 2.75, 3.25, 3.75]])


def test_frame_indices_follow_timestamps_not_fps():
    starts = np.array([0.0, 0.1, 0.5, 0.6, 1.0])  # variable frame rate
    assert frame_indices(starts, np.array([0.05, 0.3, 0.55, 0.99, 1.2])).tolist() == [0, 1, 2, 3, 4]


def test_extract_frames_is_exact(tmp_path):
    video = tmp_path / "clip.mp4"
    write_coded_mp4(video, n_frames=40, fps=8)  # 5 s: two whole TRs of 2 s
    out = tmp_path / "frames.h5"
    extract_frames(video, out, 2.0, VIDEO)
    with open_artifact(out, "frames", ("frames", "tr", "frame_index")) as f:
        frames, indices = f["frames"][:], f["frame_index"][:]
        assert f["tr"][:].tolist() == [0, 1]
    expected = np.floor(sample_times(2, 2.0, 4) * 8).astype(int)
    assert indices.tolist() == expected.tolist()
    decoded = [[read_code(frames[k, j]) for j in range(4)] for k in range(2)]
    assert decoded == expected.tolist()


def test_unreadable_video_names_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(VideoError, match="broken.mp4"):
        extract_frames(bad, tmp_path / "out.h5", 2.0, VIDEO)
    assert not (tmp_path / "out.h5").exists()


def test_cache_features_shape_and_determinism(tmp_path):
    video = tmp_path / "clip.mp4"
    write_coded_mp4(video, n_frames=40, fps=8)
    extract_frames(video, tmp_path / "frames.h5", 2.0, VIDEO)
    cache_features(tmp_path / "frames.h5", tmp_path / "a.h5", VIDEO, seed=3)
    cache_features(tmp_path / "frames.h5", tmp_path / "b.h5", VIDEO, seed=3)
    with open_artifact(tmp_path / "a.h5", "features", ("tokens",)) as a, open_artifact(tmp_path / "b.h5", "features") as b:
        tokens = a["tokens"][:]
        assert tokens.dtype == np.float16 and tokens.shape == (2, 4, 1 + 16, 32)  # cls + (32/8)² patches
        np.testing.assert_array_equal(tokens, b["tokens"][:])
        assert a.attrs["model"] == "vit_tiny_patch16_224"
