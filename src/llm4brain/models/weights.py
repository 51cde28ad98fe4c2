"""Saving and loading trained weights: safetensors only, with errors that name the file.

A checkpoint that is a pickle (``torch.save``) can run code when loaded, so it is refused with a message
that says how to convert it instead of being unpickled.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from llm4brain.artifacts import ArtifactError


def load_weights(module: torch.nn.Module, path: str | Path) -> None:
    """Load ``path`` (safetensors) into ``module``; every key must match in name and shape."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: weights file does not exist")
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as err:
        raise ArtifactError(
            f"{path}: not a safetensors file ({err}); pickled checkpoints are never loaded -- "
            "convert with safetensors.torch.save_file(torch.load(f, weights_only=True), out)"
        ) from err
    load_state(module, state, path)


def save_weights(module: torch.nn.Module, path: str | Path) -> None:
    """``module``'s state dict as safetensors, moved to CPU (a CUDA-trained model saves like a CPU one)."""
    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, Path(path))


def read_prefixed(directory: Path, prefix: str) -> dict[str, torch.Tensor]:
    """Every tensor whose name starts with ``prefix`` (prefix removed), from all safetensors shards of a
    checkpoint directory: one part of a large checkpoint without loading the rest."""
    shards = sorted(directory.glob("*.safetensors"))
    if not shards:
        raise ArtifactError(f"{directory}: no *.safetensors shards (pickled checkpoints are never loaded)")
    tensors = {}
    for shard in shards:
        with safe_open(shard, framework="pt") as f:
            for key in f.keys():
                if key.startswith(prefix):
                    tensors[key[len(prefix) :]] = f.get_tensor(key)
    if not tensors:
        raise ArtifactError(f"{directory}: no tensors named {prefix}* in its safetensors shards")
    return tensors


def load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """``module.load_state_dict(state)`` (strict), the error naming ``source``."""
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise ArtifactError(f"{source}: does not fit {type(module).__name__}: {err}") from err
