"""The HDF5 artifact contract between stages (see DESIGN.md).

Every artifact carries attrs ``schema``, ``stage``, ``created_by`` and ``config_hash``.  Writers go through
:func:`atomic_h5` so a crash never leaves a file under the declared name; readers go through
:func:`open_artifact`, which checks the schema and names the file when something is wrong.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from llm4brain import __version__

SCHEMAS = {
    "fmri": "llm4brain.fmri/1",
    "funcalign": "llm4brain.funcalign/1",
    "frames": "llm4brain.frames/1",
    "features": "llm4brain.features/1",
    "captions": "llm4brain.captions/1",
    "align": "llm4brain.align/1",
    "eval": "llm4brain.eval/1",
    "pool": "llm4brain.pool/1",
}

STR_DTYPE = h5py.string_dtype("utf-8")


class ArtifactError(ValueError):
    """An artifact is missing, of the wrong schema or of the wrong shape; the message names the file."""


def config_hash(section: Any) -> str:
    """Stable short hash of a (JSON-serialisable) config section, stored in every artifact."""
    blob = json.dumps(section, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds.

    Args:
        path: the file or folder the block writes; its parent folders are created.

    Yields:
        ``.{name}.tmp-{pid}`` beside ``path``, for the block to write (a file, or a folder it creates); it is
            removed if the block fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            if tmp.is_dir():
                shutil.rmtree(tmp)
            else:
                tmp.unlink()


@contextlib.contextmanager
def atomic_h5(path: str | os.PathLike, kind: str, params: Any = None, **options: Any) -> Iterator[h5py.File]:
    """Open a new HDF5 artifact of ``kind`` for writing (``options`` go to ``h5py.File``); it appears under
    ``path`` only when complete.

    Args:
        path: the artifact's final path (e.g. ``results/fmri/{subject}.h5``).
        kind: the artifact's stage, a key of ``SCHEMAS`` (``fmri``, ``funcalign``, ``frames``, ``features``,
            ``captions``, ``align``, ``eval``, ``pool``), whose schema the header records.
        params: the config section that made the artifact, hashed into its ``config_hash`` attr.
        **options: keyword arguments of ``h5py.File`` (e.g. ``rdcc_nbytes=0`` for no chunk cache).

    Yields:
        The new file, open for writing, its header attrs (``schema``, ``stage``, ``created_by``,
            ``config_hash``) set.
    """
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=True, **options) as f:
            write_header(f, kind, params)
            yield f


def write_header(f: h5py.File, kind: str, params: Any) -> None:
    """The attrs every artifact of ``kind`` starts with."""
    f.attrs["schema"] = SCHEMAS[kind]
    f.attrs["stage"] = kind
    f.attrs["created_by"] = f"llm4brain {__version__}"
    f.attrs["config_hash"] = config_hash(params)


def open_artifact(path: str | os.PathLike, kind: str, required: tuple[str, ...] = ()) -> h5py.File:
    """Open an artifact read-only after checking its schema and that ``required`` datasets exist.

    Args:
        path: the HDF5 artifact.
        kind: the stage it must come from, a key of ``SCHEMAS`` (``fmri``, ``funcalign``, ``frames``,
            ``features``, ``captions``, ``align``, ``eval``).
        required: datasets it must hold, as paths inside the file (e.g. ``train/bold``).

    Returns:
        The open file, read-only; close it, e.g. with ``with open_artifact(...) as f``.

    Raises:
        ArtifactError: the file does not exist, is not readable HDF5, has another schema, or lacks a
            required dataset.
    """
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: artifact does not exist (expected a {kind} file)")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ArtifactError(f"{path}: not a readable HDF5 file ({err})") from err
    schema = f.attrs.get("schema")
    if schema != SCHEMAS[kind]:
        f.close()
        raise ArtifactError(f"{path}: schema is {schema!r}, expected {SCHEMAS[kind]!r}")
    missing = [name for name in required if name not in f]
    if missing:
        f.close()
        raise ArtifactError(f"{path}: missing datasets {missing}")
    return f


def write_keys(group: h5py.Group, segment: np.ndarray | list[str], tr: np.ndarray | list[int]) -> None:
    """Write the ``(segment, tr)`` join key columns into ``group``."""
    group.create_dataset("segment", data=np.asarray(segment, dtype=object), dtype=STR_DTYPE)
    group.create_dataset("tr", data=np.asarray(tr, dtype=np.int32))


def read_keys(group: h5py.Group) -> list[tuple[str, int]]:
    """Read the ``(segment, tr)`` join key columns of ``group`` as a list of tuples."""
    segments = group["segment"].asstr()[:]
    trs = group["tr"][:]
    return [(str(s), int(t)) for s, t in zip(segments, trs, strict=True)]


def write_strings(group: h5py.Group, name: str, values: list[str]) -> None:
    """Write a utf-8 string column."""
    group.create_dataset(name, data=np.asarray(values, dtype=object), dtype=STR_DTYPE)


def set_attrs(obj: h5py.HLObject, attrs: Mapping[str, Any]) -> None:
    """Set attrs, storing dicts and lists that h5py cannot hold natively as JSON strings."""
    for key, value in attrs.items():
        if isinstance(value, (dict, list, tuple)) and not _is_numeric_sequence(value):
            value = json.dumps(value)
        obj.attrs[key] = value


def _is_numeric_sequence(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value) and len(value) > 0


# ---- readers: how downstream stages load each artifact -------------------------------------------------


def read_references(path: str | os.PathLike) -> dict[tuple[str, int], list[str]]:
    """``(segment, tr) → every reference caption`` (several annotators or captioners), in file order, from
    ``results/text/captions.h5``.

    Args:
        path: the captions artifact (``results/text/captions.h5``: ``segment``, ``tr`` and ``caption``
            datasets, one row per reference).

    Returns:
        ``(segment, tr) → [caption, ...]``, every clip with at least one reference.

    Raises:
        ArtifactError: ``path`` is not a captions artifact, or it holds no caption.
    """
    with open_artifact(path, "captions", ("segment", "tr", "caption")) as f:
        keys = read_keys(f)
        captions = f["caption"].asstr()[:]
    if not keys:
        raise ArtifactError(f"{path}: no captions")
    references: dict[tuple[str, int], list[str]] = {}
    for key, caption in zip(keys, captions, strict=True):
        references.setdefault(key, []).append(str(caption))
    return references


def read_captions(path: str | os.PathLike) -> dict[tuple[str, int], str]:
    """``(segment, tr) → caption``: each clip's first reference, the one models are trained on.

    Args:
        path: the captions artifact (``results/text/captions.h5``: ``segment``, ``tr`` and ``caption``
            datasets, one row per reference).

    Returns:
        ``(segment, tr) → caption``, the clip's first reference in file order.

    Raises:
        ArtifactError: ``path`` is not a captions artifact, or it holds no caption.
    """
    return {key: refs[0] for key, refs in read_references(path).items()}


class FeatureFiles:
    """``segment → cached vision tokens`` (n_tr, F, T, D) in ``results/features/{segment}.h5`` files, left on
    disk: only each file's path and length are held, and clips are read when asked for, so the video tokens of
    a whole dataset (13 GB at Wen 2018 size with ViT-B/16) need not fit in memory.

    Args:
        paths: the features artifacts, one per segment.

    Raises:
        ArtifactError: a file is not a features artifact, its tokens are not 4-D, or their per-clip shape
            differs from another segment's.
    """

    def __init__(self, paths: Sequence[str | os.PathLike]) -> None:
        self.paths: dict[str, str] = {}
        self.n_tr: dict[str, int] = {}
        shape: tuple[int, ...] | None = None
        for path in paths:
            with open_artifact(path, "features", ("tokens", "tr")) as f:
                tokens, segment = f["tokens"], str(f.attrs["segment"])
                if tokens.ndim != 4:
                    raise ArtifactError(f"{path}: tokens must be (n_tr, F, T, D), got {tokens.shape}")
                if shape is not None and tokens.shape[1:] != shape:
                    raise ArtifactError(
                        f"{path}: tokens {tokens.shape[1:]} per clip differ from other segments' {shape}"
                    )
                shape, self.dtype = tokens.shape[1:], tokens.dtype
                self.paths[segment], self.n_tr[segment] = str(path), len(tokens)
        self.clip_shape: tuple[int, ...] = shape or ()

    def __contains__(self, segment: object) -> bool:
        return segment in self.paths

    def clips(self, keys: Sequence[tuple[str, int]]) -> np.ndarray:
        """(n, F, T, D) tokens of each ``(segment, tr)`` of ``keys``, in their order: each segment's file is
        opened once and its distinct TRs read in increasing order."""
        out = np.empty((len(keys), *self.clip_shape), self.dtype)
        positions: dict[str, list[int]] = {}
        for i, (segment, _) in enumerate(keys):
            positions.setdefault(segment, []).append(i)
        for segment, mine in positions.items():
            if segment not in self.paths:
                raise ArtifactError(f"no cached features for segment {segment!r} (cached: {sorted(self.paths)})")
            trs, inverse = np.unique([keys[i][1] for i in mine], return_inverse=True)
            if trs[0] < 0 or trs[-1] >= self.n_tr[segment]:
                raise ArtifactError(f"{self.paths[segment]}: no TR {trs[-1]} in {self.n_tr[segment]} cached TRs")
            with open_artifact(self.paths[segment], "features", ("tokens",)) as f:
                out[mine] = f["tokens"][trs][inverse]
        return out


def check_coverage(n_tr: Mapping[str, int], keys: list[tuple[str, int]], fmri_path: str | os.PathLike) -> None:
    """Every ``(segment, tr)`` the fMRI pairs must have cached video (``n_tr``: TRs cached per segment, e.g.
    :attr:`FeatureFiles.n_tr`): a stimulus shorter than its runs (or the wrong file) is named here rather than
    surfacing as an index error in training."""
    last: dict[str, int] = {}
    for segment, tr in keys:
        last[segment] = max(last.get(segment, -1), int(tr))
    for segment, tr in sorted(last.items()):
        if segment not in n_tr:
            raise ArtifactError(f"{fmri_path}: no cached features for segment {segment!r}")
        if tr >= n_tr[segment]:
            raise ArtifactError(
                f"{fmri_path}: pairs segment {segment!r} up to TR {tr}, but its stimulus covers "
                f"{n_tr[segment]} TRs: the video is shorter than its runs' events say"
            )


def read_split(
    path: str | os.PathLike, kind: str, split: str, dataset: str
) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """One split's ``dataset`` and its ``(segment, tr)`` keys from an fmri or align artifact.

    Args:
        path: an fmri artifact (``results/fmri/{subject}.h5``) or an align artifact
            (``results/r{seed}/align/{subject}.h5``).
        kind: ``fmri`` or ``align``, the stage ``path`` must come from.
        split: ``train`` or ``test``.
        dataset: the split's dataset: ``bold`` (fmri: (n, X, Y, Z) volumes or (n, V) grayordinates, float32)
            or ``tokens`` (align: the aligned fMRI tokens, (n, Q, H) float16).

    Returns:
        data: the dataset, one row per sample, in memory.
        keys: each row's ``(segment, tr)``.

    Raises:
        ArtifactError: ``path`` is not a ``kind`` artifact with the split's ``dataset``, ``segment`` and
            ``tr``, or their lengths differ.
    """
    with open_artifact(path, kind, (f"{split}/{dataset}", f"{split}/segment", f"{split}/tr")) as f:
        data = f[split][dataset][:]
        keys = read_keys(f[split])
    if len(keys) != len(data):
        raise ArtifactError(f"{path}: {split}/{dataset} has {len(data)} rows but {len(keys)} keys")
    return data, keys
