"""The brain aligner: fMRI encoder → context tokens → the teacher's video Q-Former with adaptors."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from llm4brain.models.adaptors import add_adaptors
from llm4brain.models.fmri_encoder import FmriEncoder
from llm4brain.models.video_llm import VideoQFormer
from llm4brain.models.weights import load_weights

QFORMER_ADAPTOR_SITES = ("attention.output.dense", "output_query.dense")


class BrainAligner(nn.Module):
    """(B, X, Y, Z) volumes or (B, V) vectors → (B, Q, H) tokens in the teacher's video-token space."""

    def __init__(self, grid: tuple[int, ...], params: dict[str, Any], video_qformer: VideoQFormer) -> None:
        super().__init__()
        tok, enc, ada = params["tokenizer"], params["encoder"], params["adaptor"]
        self.encoder = FmriEncoder(grid, 1, tok["channels"], tok["patch"], enc["dim"], enc["depth"],
                                   enc["num_heads"], enc["mlp_ratio"], enc["dropout"], tok["vector_patch"])
        self.to_context = nn.Linear(enc["dim"], video_qformer.config.encoder_hidden_size)
        self.qformer = copy.deepcopy(video_qformer)
        sites = add_adaptors(self.qformer, QFORMER_ADAPTOR_SITES, ada["bottleneck"], ada["scale_init"])
        if not sites:
            raise ValueError("no adaptor sites found in the video Q-Former")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / params["temperature"])))

    def forward(self, volumes: torch.Tensor) -> torch.Tensor:
        context = self.to_context(self.encoder(volumes[:, None]))
        return self.qformer.attend(context)

    @torch.inference_mode()
    def encode(self, volumes: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
        """Aligned tokens for a stack of volumes, in eval mode and in batches."""
        self.eval()
        return torch.cat([self(volumes[i : i + batch_size]) for i in range(0, len(volumes), batch_size)])


def save_aligner(directory: Path, model: BrainAligner, grid: tuple[int, ...], params: dict[str, Any], teacher: str) -> None:
    """``aligner.safetensors`` + ``config.json`` (grid, align params, the teacher it was aligned to)."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, directory / "aligner.safetensors")
    config = {"grid": list(grid), "align": params, "teacher": str(teacher)}
    (directory / "config.json").write_text(json.dumps(config, indent=2))


def load_aligner(directory: str | Path, video_qformer: VideoQFormer) -> BrainAligner:
    """Rebuild a saved aligner around the teacher's Q-Former and load its weights (safetensors)."""
    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text())
    model = BrainAligner(tuple(config["grid"]), config["align"], video_qformer)
    load_weights(model, directory / "aligner.safetensors")
    return model.eval()
