"""Which decoder reads a stimulus file frame-exactly, and reading chosen frames with it.

decord's random access is exact only for H.264/H.265 in MP4/MOV/MKV; on MPEG-4 Part 2 with B-frames, or
any codec in AVI, it returns neighbouring frames. Every file is therefore probed first (packets only, no
decoding) and read by the fastest reader that is exact for it:

- ``decord``: H.264/H.265 in MP4/MOV/Matroska;
- ``pyav-seek``: every other file whose packets carry unique timestamps: seek to the keyframe before a
  wanted frame, decode forward (MPEG-4 Part 2: skipping the B-frames not wanted), match frames by timestamp;
- ``pyav-sequential``: AVI (which stores no presentation timestamps: FFmpeg reconstructs them, wrongly
  after a seek once B-frames reorder, and packed B-frames share one packet) and any file whose packets
  lack unique timestamps: decode every frame in order and count; frame ``i`` starts at ``i / average_rate``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

if TYPE_CHECKING:
    import av

READERS = ("decord", "pyav-seek", "pyav-sequential")
CHUNK = 32  # frames decoded at full resolution before ``prepare`` shrinks them
SEEK_GAP = 48  # frames; below this, decoding through is cheaper than seeking
DECORD_CODECS = {"h264", "hevc"}
DECORD_CONTAINERS = {"mov", "mp4", "matroska"}
SKIP_NONREF_CODECS = {"mpeg4"}  # B-frames are never references: unwanted ones need not be decoded


class VideoError(ValueError):
    """A stimulus file cannot be used; the message names the file."""


@dataclass(frozen=True)
class StreamInfo:
    """What the container says about the video stream, from its packets alone."""

    path: Path
    codec: str
    container: str
    starts: np.ndarray  # (n,) presentation start of each frame, seconds from the first frame, increasing
    end: float  # end of the last frame, seconds
    pts: np.ndarray | None  # (n,) sorted presentation timestamps in stream time base; None if unusable
    time_base: float  # seconds per timestamp tick
    keyframes: np.ndarray  # indices (presentation order) of frames a decoder can start from
    reader: str

    @property
    def n_frames(self) -> int:
        return len(self.starts)

    @property
    def variable_rate(self) -> bool:
        durations = np.diff(np.append(self.starts, self.end))
        return bool(np.ptp(durations) > 1.5 * self.time_base)  # beyond timestamp rounding


def choose_reader(codec: str, container: str, pts: list[int | None]) -> str:
    """The fastest exact reader for a stream (see module docstring)."""
    if "avi" in container.split(",") or any(p is None for p in pts) or len(set(pts)) != len(pts):
        return "pyav-sequential"
    if codec in DECORD_CODECS and set(container.split(",")) & DECORD_CONTAINERS:
        return "decord"
    return "pyav-seek"


def _open(path: Path) -> av.container.InputContainer:
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise VideoError(f"{path}: cannot open video ({err})") from err
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: no video stream")
    return container


def probe(path: str | Path, reader: str = "auto") -> StreamInfo:
    """Demux every packet of the first video stream (no decoding) and choose the reader."""
    import av

    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        try:
            packets = [(p.pts, p.duration, p.is_keyframe) for p in container.demux(stream) if p.size]
        except av.error.FFmpegError as err:
            raise VideoError(f"{path}: cannot read packets ({err})") from err
        codec, fmt = stream.codec_context.name, container.format.name
        declared, rate, time_base = stream.frames, stream.average_rate or stream.guessed_rate, stream.time_base
    if not packets:
        raise VideoError(f"{path}: no video frames")
    pts = [p for p, _, _ in packets]
    chosen = choose_reader(codec, fmt, pts) if reader == "auto" else reader
    if chosen == "pyav-sequential":
        if not rate:
            raise VideoError(f"{path}: timestamps are unusable and the stream declares no frame rate")
        n = declared or len(packets)
        starts = np.arange(n) / float(rate)
        return StreamInfo(path, codec, fmt, starts, n / float(rate), None, 1 / float(rate), np.array([0]), chosen)
    if any(p is None for p in pts):
        raise VideoError(f"{path}: packets without timestamps; only reader pyav-sequential can read it")
    if declared and declared != len(packets):
        raise VideoError(f"{path}: container declares {declared} frames but holds {len(packets)}")
    timed = cast(list[int], pts)  # every packet has a timestamp: checked above
    order = np.argsort(timed, kind="stable")
    sorted_pts = np.asarray(timed, dtype=np.int64)[order]
    if np.any(np.diff(sorted_pts) <= 0):
        raise VideoError(f"{path}: two frames share a timestamp; only reader pyav-sequential can read it")
    if time_base is None:
        raise VideoError(f"{path}: packets have timestamps but the stream declares no time base")
    tb = float(time_base)
    starts = (sorted_pts - sorted_pts[0]) * tb
    last = (packets[order[-1]][1] or 0) * tb
    if last <= 0:  # some muxers leave packet durations empty
        last = float(np.median(np.diff(starts))) if len(starts) > 1 else 1 / float(rate or 1)
    keyframes = np.flatnonzero(np.array([k for _, _, k in packets])[order])
    return StreamInfo(
        path,
        codec,
        fmt,
        starts,
        float(starts[-1] + last),
        sorted_pts,
        tb,
        keyframes if keyframes.size else np.array([0]),
        chosen,
    )


def read_frames(
    info: StreamInfo, indices: np.ndarray, prepare: Callable[[np.ndarray], np.ndarray] | None = None, threads: int = 1
) -> np.ndarray:
    """RGB frames (*indices.shape, h, w, 3) uint8 at the given presentation indices, in the given order.

    ``prepare`` maps a chunk of decoded frames (k, H, W, 3) to what is kept (e.g. resized to the vision
    model's input) in ``threads`` worker threads while the next chunks decode: a bicubic resize of a large
    frame costs more than decoding it, so one thread would bound the reader. Memory holds the kept frames
    plus at most ``threads + 2`` chunks at full resolution."""
    wanted = np.unique(indices)
    if wanted[0] < 0 or wanted[-1] >= info.n_frames:
        raise VideoError(f"{info.path}: frame {int(wanted[-1])} requested but the file has {info.n_frames}")
    decode = {"decord": _decord, "pyav-seek": _seek, "pyav-sequential": _sequential}[info.reader]
    prepare = prepare or (lambda chunk: chunk)
    kept: list[np.ndarray] = []
    pending: deque[Future] = deque()
    chunk: list[np.ndarray] = []
    with ThreadPoolExecutor(max_workers=threads) as pool:  # resizing (GIL released) overlaps decoding
        for frame in decode(info, wanted):
            chunk.append(frame)
            if len(chunk) == CHUNK:
                pending.append(pool.submit(prepare, np.stack(chunk)))
                chunk = []
                if len(pending) > threads + 1:  # bounded full-resolution chunks in memory
                    kept.append(pending.popleft().result())
        if chunk:
            pending.append(pool.submit(prepare, np.stack(chunk)))
        kept += [future.result() for future in pending]
    frames = np.concatenate(kept)
    lookup = {int(i): k for k, i in enumerate(wanted)}
    return frames[[lookup[int(i)] for i in np.ravel(indices)]].reshape(np.shape(indices) + frames.shape[1:])


def _decord(info: StreamInfo, wanted: np.ndarray) -> Iterator[np.ndarray]:
    import decord

    try:
        reader = decord.VideoReader(str(info.path), ctx=decord.cpu(0), num_threads=1)
        if len(reader) != info.n_frames:
            raise VideoError(f"{info.path}: decord counts {len(reader)} frames, the container {info.n_frames}")
        for start in range(0, len(wanted), CHUNK):
            yield from reader.get_batch(wanted[start : start + CHUNK].tolist()).asnumpy()
    except decord.DECORDError as err:
        raise VideoError(f"{info.path}: decoding failed ({err})") from err


def _seek(info: StreamInfo, wanted: np.ndarray) -> Iterator[np.ndarray]:
    """Targets come in presentation order; seek only when the next one's keyframe lies more than
    ``SEEK_GAP`` frames ahead (a seek and decoder flush cost more than decoding a few frames through)."""
    import av

    assert info.pts is not None  # set for every reader but pyav-sequential
    index_of: dict[int | None, int] = {int(p): i for i, p in enumerate(info.pts)}  # decoded frames may lack a pts
    keep = {int(info.pts[i]) for i in wanted} if info.codec in SKIP_NONREF_CODECS else None
    with _open(info.path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames, position = None, -1
        try:
            for target in wanted:
                key = int(info.keyframes[np.searchsorted(info.keyframes, target, side="right") - 1])
                if frames is None or key - position > SEEK_GAP:
                    container.seek(int(info.pts[key]), stream=stream, backward=True, any_frame=False)
                    frames = _decoded(container, stream, keep)
                for frame in frames:
                    position = index_of.get(frame.pts, -2)
                    if position == target:
                        yield frame.to_ndarray(format="rgb24")
                        break
                    if position == -2 or position > target:
                        raise VideoError(
                            f"{info.path}: seeking for frame {target} gave a frame with timestamp "
                            f"{frame.pts}; read it with reader pyav-sequential"
                        )
                else:
                    raise VideoError(f"{info.path}: stream ended before frame {target}")
        except av.error.FFmpegError as err:
            raise VideoError(f"{info.path}: decoding failed near frame {position + 1} ({err})") from err


def _decoded(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, keep: set[int] | None
) -> Iterator[av.VideoFrame]:
    """``container.decode(stream)``; with ``keep``, the decoder drops each non-reference frame (a B-frame
    in MPEG-4 Part 2) whose timestamp is not kept, after parsing only its header. Nothing refers to such a
    frame, so every other frame decodes exactly as in a full decode, for about a third less work."""
    context = stream.codec_context
    for packet in container.demux(stream):
        if keep is not None:
            context.skip_frame = "NONREF" if packet.size and packet.pts not in keep else "DEFAULT"
        yield from packet.decode()


def _sequential(info: StreamInfo, wanted: np.ndarray) -> Iterator[np.ndarray]:
    """Decode every frame; the decoder's output order is presentation order."""
    import av

    keep = set(wanted.tolist())
    count = 0
    with _open(info.path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for count, frame in enumerate(container.decode(stream), start=1):
                if count - 1 in keep:
                    yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as err:
            raise VideoError(f"{info.path}: decoding failed after frame {count} ({err})") from err
    if count != info.n_frames:
        raise VideoError(f"{info.path}: decoded {count} frames but the container declares {info.n_frames}")
