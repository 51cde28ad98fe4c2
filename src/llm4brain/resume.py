"""Resumable jobs: a job killed by a cluster (time limit, preemption, kill -9) continues where it stopped on
the next run, from state kept under ``results/.resume/`` and valid only for the same job with the same params
and unchanged inputs. Training keeps a torch checkpoint (:class:`Checkpoint`); feature caching fills its
artifact in place (:class:`ResumableH5`)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py

from llm4brain.artifacts import atomic_path, write_header
from llm4brain.runtime import LOG


@dataclass(frozen=True)
class Checkpoint:
    """Where a job keeps its resumable state, and the job that state belongs to."""

    path: Path
    fingerprint: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def for_job(
        cls,
        name: str,
        inputs: Sequence[str],
        rule_params: Mapping[str, Any],
        root: str | Path = "results",
        suffix: str = ".pt",
    ) -> Checkpoint:
        """``{root}/.resume/{name}{suffix}``, valid only for the same params and the same input files (path,
        size, mtime): a state left by a killed job is never resumed after its inputs or config changed. The
        number of processes (``devices``) is not part of it: a job requeued onto fewer GPUs resumes.
        ``rule_params`` is plain data, as the rule passes it (Snakemake's params, or a section's ``to_dict``):
        only its JSON is fingerprinted."""
        stats = [(str(p), os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in inputs]
        blob = json.dumps(
            {"rule": name, "params": without_devices(rule_params), "inputs": stats}, sort_keys=True, default=str
        )
        return cls(Path(root) / ".resume" / f"{name}{suffix}", hashlib.sha256(blob.encode()).hexdigest())

    @classmethod
    def for_snakemake(cls, job: Any, suffix: str = ".pt") -> Checkpoint:
        """For the running Snakemake job (``snakemake`` in a script): named by rule and wildcards."""
        return cls.for_job(
            "_".join([job.rule, *job.wildcards]), list(job.input), dict(job.params.items()), suffix=suffix
        )

    def where(self, *context: str) -> Checkpoint:
        """The same checkpoint, valid only in the same ``context`` too (e.g. the device a config's ``auto``
        resolved to: a job requeued onto another kind of node must not mix its numerics into the state)."""
        blob = json.dumps([self.fingerprint, *context])
        return Checkpoint(self.path, hashlib.sha256(blob.encode()).hexdigest())

    def load(self) -> dict[str, Any] | None:
        """The torch state saved by this job, or None (none saved, or saved by another job)."""
        import torch

        if not self.path.exists():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=True)  # ours, still never unpickled freely
        if state.get("fingerprint") != self.fingerprint:
            LOG.info("%s belongs to another job (inputs, config or device changed); starting from step 0", self.path)
            return None
        return state

    def save(self, state: dict[str, Any]) -> None:
        import torch

        with atomic_path(self.path) as tmp:  # a kill while writing leaves the previous checkpoint intact
            torch.save({**state, "fingerprint": self.fingerprint}, tmp)


def without_devices(params: Any) -> Any:
    """``params`` without its ``devices`` keys, at any depth."""
    if isinstance(params, dict):
        return {key: without_devices(value) for key, value in params.items() if key != "devices"}
    if isinstance(params, list | tuple):
        return [without_devices(value) for value in params]
    return params


class ResumableH5:
    """An HDF5 artifact that a long job fills item by item in ``checkpoint.path`` and renames onto ``path``
    when complete. :meth:`advance` records, at most every ``every`` seconds, how many items are done (in
    ``checkpoint.path`` + ``.json``, after the file is flushed to disk); a rerun of the same job after a kill
    reopens the file and skips them. Safe because everything but the items' data is written before the first
    record: datasets made by :meth:`allocate` get all their storage at creation, so later writes only fill it
    in place and a kill mid-write leaves the file's structure as recorded. A file that was ever recorded is
    fsynced again before it is renamed: its structure is on disk already, so after a machine crash the clips
    written since would otherwise read back as zeros from a file that looks complete."""

    def __init__(self, path: str | Path, kind: str, params: Any, checkpoint: Checkpoint, every: float) -> None:
        self.path, self.kind, self.params, self.checkpoint, self.every = Path(path), kind, params, checkpoint, every
        self.record = checkpoint.path.with_name(checkpoint.path.name + ".json")
        self.done = self._recorded()  # known before the file is opened: processes forked then do not hold it
        self.file: h5py.File | None = None
        self.recorded_at, self.recorded = time.monotonic(), bool(self.done)

    def __enter__(self) -> ResumableH5:
        self.checkpoint.path.parent.mkdir(parents=True, exist_ok=True)
        if self.done:
            self.file = h5py.File(self.checkpoint.path, "r+")
            LOG.info(
                "%s: resuming after %d items done by a killed run (%s)", self.path, self.done, self.checkpoint.path
            )
        else:
            self.record.unlink(missing_ok=True)  # the record would describe a file about to be overwritten
            self.file = h5py.File(self.checkpoint.path, "w", track_order=True)
            write_header(self.file, self.kind, self.params)
        return self

    def _recorded(self) -> int:
        """Items done by a killed run of this same job whose file is still readable; 0 if none."""
        if not self.checkpoint.path.exists():  # none, or renamed into place by a run killed just after
            return 0
        try:
            record = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return 0
        if record.get("fingerprint") != self.checkpoint.fingerprint:
            LOG.info(
                "%s belongs to another job (inputs, config or device changed); starting over", self.checkpoint.path
            )
            return 0
        try:
            h5py.File(self.checkpoint.path, "r").close()
        except OSError as err:
            LOG.warning("%s: unreadable (%s); starting over", self.checkpoint.path, err)
            return 0
        return int(record["done"])

    def allocate(self, name: str, shape: tuple[int, ...], dtype: Any, chunks: tuple[int, ...]) -> h5py.Dataset:
        """Dataset ``name`` with all its chunks allocated now (and none filled: writes fill them)."""
        assert self.file is not None and not self.recorded, "allocate every dataset before the first record"
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        return self.file.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, dcpl=dcpl, fill_time="never")

    def advance(self, done: int) -> None:
        """``done`` items are written; record it if ``every`` seconds passed since the last record."""
        if time.monotonic() - self.recorded_at < self.every:
            return
        self._sync()
        with atomic_path(self.record) as tmp:
            tmp.write_text(json.dumps({"fingerprint": self.checkpoint.fingerprint, "done": done}))
        self.recorded_at, self.recorded = time.monotonic(), True

    def _sync(self) -> None:
        assert self.file is not None
        self.file.flush()
        os.fsync(self.file.id.get_vfd_handle())

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        assert self.file is not None
        if kind is None and self.recorded:
            self._sync()
        self.file.close()
        if kind is not None:
            if not self.record.exists():  # nothing recorded: nothing to resume
                self.checkpoint.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.checkpoint.path, self.path)
        self.record.unlink(missing_ok=True)
