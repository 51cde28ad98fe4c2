"""The vision tower (and optionally the frozen image Q-Former) of a local BLIP-2 / InstructBLIP checkpoint.

Only the tensors the tower needs (``vision_model.*``, and ``qformer.*`` + ``query_tokens`` for the
Q-Former) are read from the checkpoint's safetensors shards, so a 7B checkpoint's language model is never
loaded. Preprocessing comes from the checkpoint's own image processor config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from llm4brain.artifacts import ArtifactError
from llm4brain.models.weights import load_state, read_prefixed

TOWERS = {
    "blip-2": ("Blip2VisionModel", "Blip2QFormerModel"),
    "instructblip": ("InstructBlipVisionModel", None),  # its Q-Former needs the instruction text
    "instructblipvideo": ("InstructBlipVideoVisionModel", None),
}


class HFVisionTower(nn.Module):
    """``forward_features(pixels)`` → ViT tokens (B, 1 + patches, D) or Q-Former query tokens (B, Q, Dq)."""

    def __init__(self, directory: str | Path, qformer: bool) -> None:
        super().__init__()
        import transformers

        directory = Path(directory)
        config = transformers.AutoConfig.from_pretrained(directory)
        if config.model_type not in TOWERS:
            raise ArtifactError(f"{directory}: model_type {config.model_type!r} is not one of {sorted(TOWERS)}")
        vision_cls, qformer_cls = TOWERS[config.model_type]
        self.vision = getattr(transformers, vision_cls)(config.vision_config)
        load_state(self.vision, read_prefixed(directory, "vision_model."), directory)
        self.qformer = None
        if qformer:
            if qformer_cls is None:
                raise ArtifactError(
                    f"{directory}: the {config.model_type} Q-Former is conditioned on the "
                    "instruction; cache vit_tokens and let the video Q-Former read them"
                )
            self.qformer = getattr(transformers, qformer_cls)(config.qformer_config)
            load_state(self.qformer, read_prefixed(directory, "qformer."), directory)
            self.query_tokens = nn.Parameter(read_prefixed(directory, "query_tokens")[""])
        self.eval().requires_grad_(False)

    def forward_features(self, pixels: torch.Tensor) -> torch.Tensor:
        tokens = self.vision(pixel_values=pixels).last_hidden_state
        if self.qformer is None:
            return tokens
        queries = self.query_tokens.expand(len(pixels), -1, -1)
        return self.qformer(query_embeds=queries, encoder_hidden_states=tokens).last_hidden_state


RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}  # PIL's resampling filter codes


def hf_data_config(directory: str | Path) -> dict[str, Any]:
    """timm-style data config from the checkpoint's image processor: BLIP squashes the frame to the input
    size (no crop) with its resampling filter and its own mean/std, which ``preprocessing`` applies exactly
    as the processor's PIL backend (LAVIS' evaluation transform) does; tested."""
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(directory)
    size = processor.size
    height, width = (size["height"], size["width"]) if "height" in size else (size["shortest_edge"],) * 2
    resample = int(getattr(processor, "resample", 3))
    if resample not in RESAMPLE:
        raise ArtifactError(f"{directory}: image processor resample {resample} is not one of {RESAMPLE}")
    return {
        "input_size": (3, height, width),
        "interpolation": RESAMPLE[resample],
        "mean": tuple(processor.image_mean),
        "std": tuple(processor.image_std),
        "crop_pct": 1.0,
        "crop_mode": "squash",
    }
