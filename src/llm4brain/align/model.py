"""The brain aligner: fMRI encoder → context tokens → the teacher's video Q-Former with adaptors."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from llm4brain.models.adaptors import adapt
from llm4brain.models.fmri_encoder import build_encoder
from llm4brain.models.pretrained_encoder import load_pretrained_encoder
from llm4brain.models.video_llm import VideoQFormer
from llm4brain.models.weights import load_weights, save_weights
from llm4brain.sections import AlignConfig, EncoderConfig

if TYPE_CHECKING:
    from llm4brain.models.instructblip_video import InstructionQFormer

QFORMER_ADAPTOR_SITES = ("attention.output.dense", "output_query.dense")
ENCODER_ADAPTOR_SITES = ("attn.proj", "mlp.fc2")  # after attention and after the MLP of every encoder block


class BrainAligner(nn.Module):
    """(B, W, X, Y, Z) volume windows or (B, W, V) vector windows → (B, Q, H) tokens in the teacher's
    video-token space.

    ``encoder`` is the config's ``encoder`` section, ``align`` its ``align`` section. A pretrained
    encoder (``pretrained``: SC-MBM output or a MinD-Vis checkpoint) is loaded before adaptors are inserted.
    """

    def __init__(
        self,
        grid: tuple[int, ...],
        encoder: EncoderConfig,
        align: AlignConfig,
        video_qformer: VideoQFormer | InstructionQFormer,
        pretrained: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.grid, self.encoder_config, self.align_config = grid, encoder, align
        self.encoder = build_encoder(grid, encoder)
        if pretrained is not None:
            load_pretrained_encoder(self.encoder, pretrained)
        if align.encoder_tuning == "adaptor":
            adapt(self.encoder, ENCODER_ADAPTOR_SITES, align.adaptor)
        self.to_context = nn.Linear(encoder.dim, video_qformer.config.encoder_hidden_size)
        self.qformer = copy.deepcopy(video_qformer)
        adapt(self.qformer, QFORMER_ADAPTOR_SITES, align.adaptor)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / align.temperature)))

    @property
    def config(self) -> dict[str, Any]:
        """What config.json records: the grid and the sections as they were given."""
        return {"grid": list(self.grid), "encoder": self.encoder_config.to_dict(), "align": self.align_config.to_dict()}

    def align(self, encoded: torch.Tensor) -> torch.Tensor:
        """Encoder tokens (B, N, D) → the Q-Former's (B, Q, H) tokens in the video-token space."""
        return self.qformer.attend(self.to_context(encoded))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.align(self.encoder(windows))

    def encode(self, windows: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
        """Aligned tokens for a stack of windows, in eval mode and in batches on the model's device; returned
        on the CPU in float32."""
        return in_batches(self.eval(), windows, self.logit_scale.device, batch_size)


@torch.inference_mode()
def in_batches(
    fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, device: torch.device, batch_size: int = 128
) -> torch.Tensor:
    """``fn`` over ``inputs`` in batches moved to ``device`` (a subject's windows need not fit it at once),
    gathered on the CPU in float32."""
    return torch.cat(
        [fn(inputs[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(inputs), batch_size)]
    )


def save_aligner(directory: Path, model: BrainAligner, teacher: str) -> None:
    """``aligner.safetensors`` + ``config.json`` (grid, encoder and align params, the teacher it was aligned to)."""
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(model, directory / "aligner.safetensors")
    (directory / "config.json").write_text(json.dumps({**model.config, "teacher": str(teacher)}, indent=2))


def load_aligner(directory: str | Path, video_qformer: VideoQFormer | InstructionQFormer) -> BrainAligner:
    """Rebuild a saved aligner around the teacher's Q-Former and load its weights (safetensors)."""
    directory = Path(directory)
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    encoder = EncoderConfig.from_dict(config["encoder"], source=config_path)
    align = AlignConfig.from_dict(config["align"], source=config_path)
    model = BrainAligner(tuple(config["grid"]), encoder, align, video_qformer)
    load_weights(model, directory / "aligner.safetensors")
    return model.eval()
