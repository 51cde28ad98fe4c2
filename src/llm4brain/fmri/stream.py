"""Training samples streamed from the fMRI HDF5 files, with memory bounded by ``train.buffer_mb``, never by the
size of the data (a collection of a thousand subjects fits on disk, not in memory).

A stream cuts its samples into blocks of consecutive rows of one file. Each epoch shuffles the block order
(seeded), then fills the shuffle buffer with as many blocks as ``buffer_mb`` holds (a group), reads the
distinct rows their windows need once (runs of consecutive rows, so reads follow the files' row chunks) and
serves the group's samples in a seeded random order before reading the next group. Windows of W TRs are
gathered from the held rows per batch: no volume is copied W times. The position (epoch, group, sample) is
the whole state: a group's contents and order are rebuilt from the seed, so a resumed job reads the same
samples in the same order. With a buffer that holds all the data, the order is a seeded permutation of every
sample per epoch, the order :class:`InMemorySamples` draws from memory. A group is a function of (seed,
epoch, group) alone, so DataLoader workers (``train.loader_workers``) can read the next ones ahead of training
without changing what is served.

Under data parallelism every rank walks the same global order and keeps the samples of each batch at its
positions ``rank, rank + world_size, ...``: the union of the ranks' batches is the one-process batch, and a
position saved by N processes resumes on any number. Each rank reads whole groups: its memory stays within
``buffer_mb``, but the reads are repeated on every rank.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from llm4brain.align.windows import run_ends, window_rows
from llm4brain.artifacts import ArtifactError, open_artifact, read_keys

MIB = 2**20
BLOCK_BYTES = 16 * MIB  # a block read costs its bytes, not its call; small next to the buffer (see block_units)

# (block, rng) -> (unit ids (n,), file index (n, S), window rows (n, S, W)): a block's samples, S windows each
DrawBlock = Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray, np.ndarray]]


class BoldSplit:
    """One split of an fmri artifact (its ``bold`` volumes) or of an align artifact (its ``tokens``) as the
    streams read it: its rows' shape and where each row's run ends. Only these are held (a few bytes a row);
    the rows stay on disk."""

    def __init__(self, path: str | Path, split: str = "train", kind: str = "fmri", dataset: str = "bold") -> None:
        with open_artifact(path, kind, (f"{split}/{dataset}", f"{split}/segment", f"{split}/tr")) as f:
            data = f[split][dataset]
            self.n_rows, self.shape, self.dtype = len(data), tuple(data.shape[1:]), data.dtype
            self.chunk_rows = data.chunks[0] if data.chunks else 1
            segment, tr = f[split]["segment"][:], f[split]["tr"][:]
        if not len(segment) == len(tr) == self.n_rows:
            raise ArtifactError(
                f"{path}: {split}/{dataset} has {self.n_rows} rows but {len(segment)} segments and {len(tr)} trs"
            )
        self.path, self.split, self.kind, self.dataset = str(path), split, kind, dataset
        self.run_end = run_ends(segment, tr)

    def keys(self) -> list[tuple[str, int]]:
        """Each row's ``(segment, tr)``, read again (not held: a collection's rows number millions)."""
        with open_artifact(self.path, self.kind, (f"{self.split}/segment", f"{self.split}/tr")) as f:
            return read_keys(f[self.split])

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def windows(self, rows: np.ndarray, window: int) -> np.ndarray:
        """(n, W) rows of each row's window (:func:`~llm4brain.align.windows.window_rows`)."""
        return window_rows(rows, self.run_end, window)

    def read(self, rows: np.ndarray, out: np.ndarray) -> None:
        """Rows ``rows`` (sorted, distinct) into ``out``, one read per run of consecutive rows."""
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        with h5py.File(self.path, "r") as f:
            bold = f[self.split][self.dataset]
            for first, span in zip(np.concatenate([[0], breaks]), np.split(rows, breaks), strict=True):
                bold.read_direct(out, np.s_[span[0] : span[-1] + 1], np.s_[first : first + len(span)])


def open_splits(paths: list[str], split: str = "train", kind: str = "fmri", dataset: str = "bold") -> list[BoldSplit]:
    """The files' ``split``, which must share one grid (the encoder's input)."""
    splits = [BoldSplit(path, split, kind, dataset) for path in paths]
    for s in splits[1:]:
        if (s.shape, s.dtype) != (splits[0].shape, splits[0].dtype):
            raise ArtifactError(
                f"{s.path}: fMRI grid {s.shape} ({s.dtype}) differs from {splits[0].path}'s "
                f"{splits[0].shape} ({splits[0].dtype}) (set fmri.resample and a common mask)"
            )
    return splits


class HeldRows:
    """The distinct rows that a set of windows needs, read once: what the shuffle buffer holds."""

    def __init__(self, files: list[BoldSplit], file_index: np.ndarray, rows: np.ndarray) -> None:
        """``file_index`` (n, S) and ``rows`` (n, S, W): sample i's s-th window is rows ``rows[i, s]`` of file
        ``files[file_index[i, s]]``."""
        window = rows.shape[-1]
        flat_files, flat_rows = file_index.reshape(-1), rows.reshape(-1, window)
        distinct = {
            f: np.unique(flat_rows[flat_files == f].reshape(-1), return_inverse=True)
            for f in np.unique(flat_files).tolist()
        }
        volumes = np.empty((sum(len(u) for u, _ in distinct.values()), *files[0].shape), files[0].dtype)
        index, offset = np.empty(flat_rows.shape, np.int64), 0
        for f, (unique, inverse) in distinct.items():
            files[f].read(unique, volumes[offset : offset + len(unique)])
            index[flat_files == f] = inverse.reshape(-1, window) + offset
            offset += len(unique)
        self.volumes = torch.from_numpy(volumes)  # a tensor: a DataLoader worker hands it over in shared memory
        self.index = torch.from_numpy(index.reshape(rows.shape))

    def __len__(self) -> int:
        return len(self.volumes)

    def take(self, samples: np.ndarray) -> torch.Tensor:
        """(k, S, W, *grid) windows of samples ``samples``."""
        return self.volumes[self.index[torch.from_numpy(samples)]]


class GroupReader(torch.utils.data.Dataset):
    """Item ``(epoch, group)``: that group of a stream, read (what DataLoader workers run, ahead of training)."""

    def __init__(self, stream: ShuffledStream) -> None:
        self.stream = stream

    def __getitem__(self, position: tuple[int, int]) -> tuple[tuple[int, int], np.ndarray, HeldRows, np.ndarray]:
        return (position, *self.stream.read(*position))


def as_is(item: Any) -> Any:
    """A DataLoader collate_fn that leaves a read group as it is."""
    return item


class ShuffledStream:
    """Seeded epochs over blocks of samples, read a buffer-sized group at a time (see the module docstring).
    With ``workers``, DataLoader worker processes read the next groups while training runs; the buffer then
    holds ``1 + workers`` groups, each of ``1 / (1 + workers)`` of it."""

    def __init__(
        self,
        files: list[BoldSplit],
        n_blocks: int,
        draw_block: DrawBlock,
        block_bound: np.ndarray,
        capacity_rows: int,
        seed: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 0,
    ) -> None:
        """``block_bound[b]``: at most how many distinct rows block b's windows need; ``capacity_rows``: at most
        how many rows the buffer holds."""
        if n_blocks == 0:
            raise ArtifactError(f"no training samples in {', '.join(f.path for f in files)}")
        if block_bound.max() > capacity_rows // (1 + workers):
            raise ValueError(
                f"train.buffer_mb holds {capacity_rows} rows of {files[0].shape}, {1 + workers} groups "
                f"of {capacity_rows // (1 + workers)} rows with {workers} loader workers, fewer than a "
                f"block needs ({block_bound.max()}): raise it"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not one of {world_size} processes")
        self.files, self.n_blocks, self.draw_block, self.block_bound = files, n_blocks, draw_block, block_bound
        self.group_rows, self.seed, self.rank, self.world_size = capacity_rows // (1 + workers), seed, rank, world_size
        self.workers = workers
        self._reader: Iterator[tuple[tuple[int, int], np.ndarray, HeldRows, np.ndarray]] | None = None
        self.epoch, self.group, self.position = 0, 0, 0
        self.held: HeldRows | None = None
        self.units = self.order = np.empty(0, np.int64)
        self._plan: tuple[int, list[list[int]]] | None = None
        self.peak_rows = 0  # the most rows the buffer held, for tests and benchmarks

    def groups(self, epoch: int) -> list[list[int]]:
        """Epoch ``epoch``'s blocks in shuffled order, cut into groups that fit the buffer."""
        if self._plan is None or self._plan[0] != epoch:
            order = np.random.default_rng((self.seed, epoch, 0)).permutation(self.n_blocks)
            groups: list[list[int]] = [[]]
            rows = 0
            for block in order.tolist():
                if rows + self.block_bound[block] > self.group_rows:
                    groups.append([])
                    rows = 0
                groups[-1].append(block)
                rows += self.block_bound[block]
            self._plan = (epoch, groups)
        return self._plan[1]

    def read(self, epoch: int, group: int) -> tuple[np.ndarray, HeldRows, np.ndarray]:
        """Group ``group`` of epoch ``epoch``: its samples' unit ids in block order (file order with one
        group), the rows they need, and the seeded order they are served in."""
        rng = np.random.default_rng((self.seed, epoch, group + 1))
        drawn = [self.draw_block(block, rng) for block in sorted(self.groups(epoch)[group])]
        units = np.concatenate([units for units, _, _ in drawn])
        held = HeldRows(
            self.files, np.concatenate([f for _, f, _ in drawn]), np.concatenate([rows for _, _, rows in drawn])
        )
        return units, held, rng.permutation(len(units))

    def _positions(self) -> Iterator[tuple[int, int]]:
        """(epoch, group) from the current one on, for ever: what the workers read, in order."""
        epoch, group = self.epoch, self.group
        while True:
            yield epoch, group
            group += 1
            if group == len(self.groups(epoch)):
                epoch, group = epoch + 1, 0

    def _load(self) -> None:
        self.held = None  # free the last group before reading the next
        if not self.workers:
            self.units, self.held, self.order = self.read(self.epoch, self.group)
        else:
            if self._reader is None:
                self._reader = iter(
                    torch.utils.data.DataLoader(
                        GroupReader(self),
                        batch_size=None,
                        sampler=self._positions(),
                        num_workers=self.workers,
                        prefetch_factor=1,
                        collate_fn=as_is,
                    )
                )
            position, self.units, self.held, self.order = next(self._reader)
            assert position == (self.epoch, self.group), (position, self.epoch, self.group)
        self.peak_rows = max(self.peak_rows, len(self.held))

    def _advance(self) -> None:
        self.position, self.held = 0, None
        self.group += 1
        if self.group == len(self.groups(self.epoch)):
            self.epoch, self.group = self.epoch + 1, 0

    def next(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``batch_size`` samples of the global order, this rank's share of them: unit ids (k,) and
        windows (k, S, W, *grid)."""
        units, windows, taken = [], [], 0
        while taken < batch_size:
            if self.held is None:
                self._load()
            assert self.held is not None
            picks = self.order[self.position : self.position + batch_size - taken]
            mine = picks[(taken + np.arange(len(picks))) % self.world_size == self.rank]
            units.append(torch.from_numpy(self.units[mine]))
            windows.append(self.held.take(mine))
            taken, self.position = taken + len(picks), self.position + len(picks)
            if self.position == len(self.order):
                self._advance()
        return torch.cat(units), torch.cat(windows)

    def state_dict(self) -> dict[str, int]:
        """The position: with the seed, all that is needed to continue the same order after a restart."""
        return {"epoch": self.epoch, "group": self.group, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.group, self.position, self.held = state["epoch"], state["group"], state["position"], None
        self._reader = None  # its workers read ahead from the old position


def capacity_rows(buffer_mb: float, files: list[BoldSplit]) -> int:
    return int(buffer_mb * MIB) // files[0].row_bytes


def block_units(files: list[BoldSplit], capacity: int, rows_per_unit: int, chunk: int = 1) -> int:
    """Units per block: about BLOCK_BYTES of rows, at most an eighth of the buffer (so that a group mixes
    blocks), a whole number of ``chunk``."""
    target = min(BLOCK_BYTES // (files[0].row_bytes * rows_per_unit), capacity // (8 * rows_per_unit))
    return max(chunk, target // chunk * chunk)


def split_rows(n_rows: int, fraction: float, seed: int, file: int) -> tuple[np.ndarray, np.ndarray]:
    """A file's rows split into (training, validation): ``round(fraction · n_rows)`` seeded random rows to
    validate on, the same for any buffer size."""
    val = np.sort(np.random.default_rng((seed, file)).permutation(n_rows)[: round(n_rows * fraction)])
    return np.setdiff1d(np.arange(n_rows), val), val


def block_stream(
    files: list[BoldSplit],
    cut: Callable[[int], tuple[np.ndarray, DrawBlock]],
    rows_per_unit: int,
    buffer_mb: float,
    seed: int,
    *,
    chunk: int = 1,
    rank: int = 0,
    world_size: int = 1,
    workers: int = 0,
) -> ShuffledStream:
    """The one builder of a stream: the buffer's capacity, the units per block (:func:`block_units`), then the
    blocks that ``cut(units per block)`` returns (each block's bound on distinct rows, and how to draw it)."""
    capacity = capacity_rows(buffer_mb, files)
    bound, draw = cut(block_units(files, capacity // (1 + workers), rows_per_unit, chunk))
    return ShuffledStream(
        files, len(bound), draw, bound, capacity, seed, rank=rank, world_size=world_size, workers=workers
    )


def row_stream(
    files: list[BoldSplit],
    rows: list[np.ndarray],
    window: int,
    buffer_mb: float,
    seed: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    workers: int = 0,
) -> ShuffledStream:
    """Every row ``rows[f]`` of file f is a sample: its window, one per sample (S = 1); unit id = the sample's
    index in file order. Blocks are runs of whole row chunks of one file."""

    def cut(per_block: int) -> tuple[np.ndarray, DrawBlock]:
        blocks, first = [], 0  # (file, rows, first unit id)
        for f, file_rows in enumerate(rows):
            bounds = np.searchsorted(file_rows, np.arange(0, files[f].n_rows + per_block, per_block))
            for block in np.split(file_rows, bounds[1:-1]):
                if len(block):
                    blocks.append((f, block, first))
                    first += len(block)

        def draw(b: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            f, block, first = blocks[b]
            return (
                np.arange(first, first + len(block)),
                np.full((len(block), 1), f),
                files[f].windows(block, window)[:, None],
            )

        return np.array([block[-1] - block[0] + window for _, block, _ in blocks], np.int64), draw

    chunk = max(f.chunk_rows for f in files)
    return block_stream(files, cut, 1, buffer_mb, seed, chunk=chunk, rank=rank, world_size=world_size, workers=workers)


def clip_stream(
    files: list[BoldSplit],
    repeats: list[list[np.ndarray]],
    window: int,
    buffer_mb: float,
    seed: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    workers: int = 0,
) -> ShuffledStream:
    """Clip c (unit id) is a sample of one window per file (subject), each from a seeded random repeat of the
    clip: ``repeats[s][c]`` are the rows of file s that show clip c. Blocks are runs of consecutive clips, so a
    block's rows lie in a few spans of each file (one per repeat)."""
    n_subjects, n_clips = len(files), len(repeats[0])
    counts = [np.array([len(r) for r in subject]) for subject in repeats]
    firsts = [np.concatenate([[0], np.cumsum(c)[:-1]]) for c in counts]
    flat = [np.concatenate(subject) for subject in repeats]

    def cut(per_block: int) -> tuple[np.ndarray, DrawBlock]:
        starts = list(range(0, n_clips, per_block))

        def draw(b: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            clips = np.arange(starts[b], min(n_clips, starts[b] + per_block))
            rows = [flat[s][firsts[s][clips] + rng.integers(0, counts[s][clips])] for s in range(n_subjects)]
            windows = np.stack([files[s].windows(r, window) for s, r in enumerate(rows)], axis=1)  # (n, S, W)
            return clips, np.broadcast_to(np.arange(n_subjects), (len(clips), n_subjects)), windows

        bound = [(min(n_clips, a + per_block) - a) * n_subjects * window for a in starts]
        return np.array(bound, np.int64), draw

    return block_stream(
        files, cut, n_subjects * window, buffer_mb, seed, rank=rank, world_size=world_size, workers=workers
    )


def iter_windows(file: BoldSplit, rows: np.ndarray, window: int, batch_size: int) -> Iterator[torch.Tensor]:
    """(b, W, *grid) windows of ``rows`` of ``file`` in order, ``batch_size`` at a time (validation, inference)."""
    for start in range(0, len(rows), batch_size):
        chunk = file.windows(rows[start : start + batch_size], window)
        yield HeldRows([file], np.zeros((len(chunk), 1), np.int64), chunk[:, None]).take(np.arange(len(chunk)))[:, 0]


class SampleRows:
    """Samples as ``(file, row)`` pairs, read a batch at a time: a trainer that draws random batches holds
    these indices (a few bytes a sample), never the data, and each batch costs one read of the distinct rows
    its windows need. The values are the files' own (converted to float32), so a batch equals the same rows
    taken from the whole split in memory."""

    def __init__(self, files: list[BoldSplit], file_index: np.ndarray, rows: np.ndarray, window: int | None) -> None:
        """Sample i is row ``rows[i]`` of ``files[file_index[i]]``: with its window of ``window`` TRs
        ((W, *grid) per sample), or alone (``None``: (*grid), the align stage's tokens)."""
        self.files, self.file_index, self.rows, self.window = files, np.asarray(file_index), np.asarray(rows), window

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, samples: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Samples ``samples`` (any order, repeats allowed), float32: (k, W, *grid) or (k, *grid)."""
        samples = np.asarray(samples, np.int64)
        file_index, rows = self.file_index[samples], self.rows[samples]
        window = np.empty((len(samples), self.window or 1), np.int64)
        for f in np.unique(file_index).tolist():
            window[file_index == f] = self.files[f].windows(rows[file_index == f], self.window or 1)
        taken = HeldRows(self.files, file_index[:, None], window[:, None]).take(np.arange(len(samples)))[:, 0]
        return (taken if self.window is not None else taken[:, 0]).float()

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Every sample in order, ``batch_size`` at a time (inference)."""
        for start in range(0, len(self), batch_size):
            yield self.take(np.arange(start, min(start + batch_size, len(self))))


class InMemorySamples:
    """Every training window in memory (W copies of each volume), served in the order a
    :func:`row_stream` whose buffer holds all the data serves them: the reference that streaming is tested
    and benchmarked against. Only for data that fits in memory."""

    def __init__(
        self,
        files: list[BoldSplit],
        rows: list[np.ndarray],
        window: int,
        seed: int,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        stacks = []
        for f, file_rows in zip(files, rows, strict=True):
            volumes = np.empty((f.n_rows, *f.shape), f.dtype)
            f.read(np.arange(f.n_rows), volumes)
            stacks.append(volumes[f.windows(file_rows, window)])
        self.samples, self.seed, self.rank, self.world_size = np.concatenate(stacks), seed, rank, world_size
        self.epoch = self.position = 0
        self.order = self._order()

    def _order(self) -> np.ndarray:
        return np.random.default_rng((self.seed, self.epoch, 1)).permutation(len(self.samples))

    def next(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        picks: list[np.ndarray] = []
        taken = 0
        while taken < batch_size:
            picks.append(self.order[self.position : self.position + batch_size - taken])
            taken, self.position = taken + len(picks[-1]), self.position + len(picks[-1])
            if self.position == len(self.order):
                self.epoch, self.position = self.epoch + 1, 0
                self.order = self._order()
        picked = np.concatenate(picks)[self.rank :: self.world_size]
        return torch.from_numpy(picked), torch.from_numpy(self.samples[picked][:, None])

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
        self.order = self._order()
