"""Start the fMRI encoder from pretrained weights: this project's SC-MBM output, or a MinD-Vis / MinD-Video
fMRI-encoder checkpoint whose state-dict names are mapped onto ours.

MinD-Vis (``sc_mbm/mae_for_fmri.py``) names its encoder ``patch_embed.proj`` (a ``Conv1d(1, D, 16,
stride=16)``, our ``VectorTokenizer.proj``), ``pos_embed`` (with a leading CLS position, which we do not
use), ``cls_token``, ``blocks.N.*`` (timm ViT blocks, as ours) and ``norm``; its MAE decoder is
``decoder_*`` and ``mask_token``. Checkpoints are read as safetensors, or as ``.pth`` with
``torch.load(weights_only=True)``: a pickle holding anything but tensors and containers is refused, never
unpickled.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from llm4brain.artifacts import ArtifactError
from llm4brain.models.fmri_encoder import FmriEncoder
from llm4brain.runtime import LOG

WRAPPERS = ("module.", "fmri_encoder.", "cond_stage_model.mae.", "encoder.")
RENAMES = {"patch_embed.proj.": "tokenizer.proj.", "pos_embed": "tokenizer.pos_embed"}


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or a weights-only ``.pth`` (``model`` / ``state_dict`` entry or bare)."""
    if not path.exists():
        raise ArtifactError(f"{path}: encoder checkpoint does not exist")
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except (SafetensorError, OSError) as err:
            raise ArtifactError(f"{path}: not a readable safetensors file ({err})") from err
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise ArtifactError(
            f"{path}: cannot be read with torch.load(weights_only=True) -- it pickles more than tensors (e.g. a "
            f"config object), and such pickles can run code, so they are never loaded. Where you trust the file, "
            f"convert it once: safetensors.torch.save_file(torch.load(f, weights_only=False)['model'], "
            f"'encoder.safetensors') ({err})"
        ) from err
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ArtifactError(f"{path}: holds no state dict of tensors")
    return state


def our_name(key: str) -> str:
    """A checkpoint key in our encoder's names (wrappers stripped, MinD-Vis names renamed)."""
    for prefix in WRAPPERS:
        if key.startswith(prefix):
            key = key[len(prefix) :]
    for theirs, ours in RENAMES.items():
        if key.startswith(theirs):
            return ours + key[len(theirs) :]
    return key


def load_pretrained_encoder(encoder: FmriEncoder, path: str | Path) -> tuple[list[str], list[str]]:
    """Load what fits of ``path`` (a checkpoint file, or pretrain_scmbm's folder) into ``encoder``; return
    (missing, unexpected) keys, which are logged.

    A tensor whose shape differs from ours is an error naming the key and both shapes (a different
    patch size, width or voxel count is a different model, not one to load partially). MinD-Vis'
    positional embedding carries a CLS position first; it is dropped when that is the only difference.
    """
    path = Path(path)
    if path.is_dir():  # pretrain_scmbm's output folder
        path = path / "encoder.safetensors"
    ours = encoder.state_dict()
    mapped, unexpected = {}, []
    for key, value in read_state_dict(path).items():
        name = our_name(key)
        if name not in ours:
            unexpected.append(key)
            continue
        if name == "tokenizer.pos_embed" and value.shape[1] == ours[name].shape[1] + 1:
            value = value[:, 1:]
        if value.shape != ours[name].shape:
            raise ArtifactError(
                f"{path}: {key} has shape {tuple(value.shape)} but the encoder's {name} is "
                f"{tuple(ours[name].shape)} -- set config `encoder` (dim, depth, num_heads, "
                f"window, tokenizer) to the checkpoint's architecture"
            )
        mapped[name] = value
    if not mapped:
        raise ArtifactError(f"{path}: no key matches the fMRI encoder (first keys: {unexpected[:5]})")
    missing = sorted(set(ours) - set(mapped))
    encoder.load_state_dict(mapped, strict=False)
    LOG.info(
        "%s: loaded %d encoder tensors; missing %s; unexpected %s",
        path,
        len(mapped),
        missing or "none",
        unexpected or "none",
    )
    return missing, unexpected
