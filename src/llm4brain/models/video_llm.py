"""The video-conditioned captioner (Video-LLaMA's video branch, built from transformers classes).

``VideoQFormer``: frame-position embeddings + learned queries + ``Blip2QFormerModel`` cross-attending to the
cached vision tokens of a clip → ``(B, Q, H)`` video tokens. The teacher is a ``VideoQFormer`` and a
:class:`~llm4brain.models.captioner.Captioner`; this module builds, saves and loads it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    Blip2QFormerConfig,
    Blip2QFormerModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from llm4brain.models.captioner import Captioner
from llm4brain.models.quantization import keep_4bit_training_layout, quantized_loading
from llm4brain.models.weights import load_weights, save_weights
from llm4brain.sections import VideoLlmLlmConfig, VideoLlmQformerConfig

if TYPE_CHECKING:
    from llm4brain.artifacts import FeatureFiles
    from llm4brain.models.instructblip_video import InstructionQFormer


class VideoQFormer(nn.Module):
    """Clip tokens (B, F, T, D) → video tokens (B, Q, H)."""

    def __init__(self, config: Blip2QFormerConfig, num_frames: int, num_queries: int) -> None:
        super().__init__()
        self.config = config
        self.num_frames = num_frames
        self.frame_position = nn.Embedding(num_frames, config.encoder_hidden_size)
        self.query_tokens = nn.Parameter(torch.randn(1, num_queries, config.hidden_size) * 0.02)
        self.qformer = Blip2QFormerModel(config)

    def attend(self, context: torch.Tensor) -> torch.Tensor:
        """Queries cross-attend to any context (B, N, D): video tokens here, fMRI tokens in the aligner."""
        queries = self.query_tokens.expand(context.shape[0], -1, -1)
        return self.qformer(query_embeds=queries, encoder_hidden_states=context).last_hidden_state

    def forward(self, clip_tokens: torch.Tensor) -> torch.Tensor:
        b, f, t, d = clip_tokens.shape
        if f != self.num_frames:
            raise ValueError(f"video Q-Former expects {self.num_frames} frames per clip, got {f}")
        x = clip_tokens + self.frame_position.weight[None, :, None, :]  # (B, F, T, D)
        return self.attend(x.reshape(b, f * t, d))


BATCH_BYTES = 256 * 2**20  # raw vision tokens of one encode_clips batch, float32


@torch.no_grad()
def encode_clips(
    qformer: VideoQFormer | InstructionQFormer,
    features: FeatureFiles,
    keys: Sequence[tuple[str, int]],
    batch_size: int = 128,
) -> torch.Tensor:
    """The video tokens (n, Q, H) of each ``(segment, tr)`` clip in ``keys``, from cached vision features read
    ``batch_size`` clips at a time, fewer where a batch's raw tokens would pass ``BATCH_BYTES`` in float32 (a
    ViT-g clip of 8 frames is 11.6 MB): only a batch of raw tokens is ever in memory. Computed on the
    Q-Former's device, returned on the CPU in float32."""
    device = next(qformer.parameters()).device
    batch_size = max(1, min(batch_size, BATCH_BYTES // (4 * int(np.prod(features.clip_shape)))))
    out = []
    for start in range(0, len(keys), batch_size):
        clips = features.clips(keys[start : start + batch_size]).astype(np.float32)
        out.append(qformer(torch.from_numpy(clips).to(device)).float().cpu())
    return torch.cat(out)


def qformer_config(qformer: VideoLlmQformerConfig, vision_dim: int) -> Blip2QFormerConfig:
    """A tiny Q-Former (demo) whose cross-attention reads ``vision_dim`` tokens in every layer."""
    return Blip2QFormerConfig(
        hidden_size=qformer.hidden_size,
        num_hidden_layers=qformer.num_layers,
        num_attention_heads=qformer.num_heads,
        intermediate_size=qformer.intermediate_size,
        encoder_hidden_size=vision_dim,
        cross_attention_frequency=1,
        vocab_size=2,
        max_position_embeddings=qformer.num_queries,
        hidden_dropout_prob=qformer.dropout,
        attention_probs_dropout_prob=qformer.dropout,
    )


def llama_config(llm: VideoLlmLlmConfig, tokenizer: PreTrainedTokenizerFast, max_positions: int) -> LlamaConfig:
    """A tiny Llama sized from config, with the demo tokenizer's special ids."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=llm.hidden_size,
        intermediate_size=llm.intermediate_size,
        num_hidden_layers=llm.num_layers,
        num_attention_heads=llm.num_heads,
        num_key_value_heads=llm.num_heads,
        max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )


# ---- the teacher directory -------------------------------------------------------------------------------
#   config.json              llm4brain settings (frames, queries, template, prompt, Q-Former config)
#   video_qformer.safetensors  VideoQFormer weights
#   projection.safetensors     Captioner.projection
#   llm/                       the causal LM (HF save_pretrained, safetensors)
#   tokenizer/                 the tokenizer (HF format)


def save_teacher(directory: Path, qformer: VideoQFormer, captioner: Captioner, settings: dict[str, Any]) -> None:
    """Write the teacher in the layout above (safetensors only)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        **settings,
        "qformer": qformer.config.to_dict(),
        "num_frames": qformer.num_frames,
        "num_queries": qformer.query_tokens.shape[1],
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2, default=str))
    save_weights(qformer, directory / "video_qformer.safetensors")
    save_weights(captioner.projection, directory / "projection.safetensors")
    captioner.llm.save_pretrained(directory / "llm")  # type: ignore[arg-type]  # peft says str; any path works
    captioner.tokenizer.save_pretrained(directory / "tokenizer")


def load_teacher(
    directory: str | Path,
    device: torch.device | str = "cpu",
    llm_dir: str | Path | None = None,
    quantization: str = "none",
) -> tuple[VideoQFormer | InstructionQFormer, Captioner, dict[str, Any]]:
    """Load the teacher, frozen and in eval mode on ``device``: a directory written by :func:`save_teacher`,
    or one ``import_video_llm`` wrote, whose ``config.json`` names a local checkpoint
    (``models.instructblip_video``).

    Args:
        directory: the teacher's folder (``results/video_llm`` or ``results/r{seed}/video_llm``) with its
            ``config.json``.
        device: the device the Q-Former and the captioner are loaded on (a ``torch.device`` or its name).
        llm_dir: another LLM of the same architecture to load instead of the teacher's (the fMRI student's
            fully tuned copy); None = the teacher's own.
        quantization: ``none``, ``8bit`` or ``4bit``: load the LLM through bitsandbytes in that precision
            (``instruct.llm.quantization``), to fit a smaller GPU.

    Returns:
        qformer: the video Q-Former, clip tokens (B, F, T, D) → the video tokens the LLM reads.
        captioner: the projection and LLM, with the tokenizer and the instruction template, that caption
            video tokens.
        settings: the folder's ``config.json``: the template, prompt and ``max_caption_tokens`` (and, for an
            imported teacher, the checkpoint it points to and the LLM's ``dtype``).

    Raises:
        FileNotFoundError: ``directory`` holds no ``config.json``.
    """
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{directory}: not a video LLM directory (no config.json)")
    settings = json.loads(config_path.read_text())
    if "checkpoint" in settings:
        from llm4brain.models.instructblip_video import load_instructblip_video

        return load_instructblip_video(settings, device, llm_dir, quantization)
    qformer = _own_qformer(directory, settings)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(directory / "tokenizer")
    llm = AutoModelForCausalLM.from_pretrained(
        llm_dir or directory / "llm", use_safetensors=True, **quantized_loading(quantization, device)
    )
    keep_4bit_training_layout(llm)
    captioner = Captioner(
        llm,
        tokenizer,
        qformer.config.hidden_size,
        settings["template"],
        settings["prompt"],
        settings["max_caption_tokens"],
    )
    load_weights(captioner.projection, directory / "projection.safetensors")
    for module in (qformer, captioner):
        module.to(device).eval().requires_grad_(False)
    return qformer, captioner, settings


def load_video_qformer(directory: str | Path) -> VideoQFormer | InstructionQFormer:
    """Only the teacher's video Q-Former (frozen, eval mode, CPU), for the stages that never run its LLM."""
    directory = Path(directory)
    settings = json.loads((directory / "config.json").read_text())
    if "checkpoint" in settings:
        from llm4brain.models.instructblip_video import load_instruction_qformer

        return load_instruction_qformer(settings)
    return _own_qformer(directory, settings)


def _own_qformer(directory: Path, settings: dict[str, Any]) -> VideoQFormer:
    """The ``VideoQFormer`` of a directory written by :func:`save_teacher` (frozen, eval mode, CPU)."""
    qformer = VideoQFormer(Blip2QFormerConfig(**settings["qformer"]), settings["num_frames"], settings["num_queries"])
    load_weights(qformer, directory / "video_qformer.safetensors")
    return qformer.eval().requires_grad_(False)


def build_llm(llm: VideoLlmLlmConfig, tokenizer: PreTrainedTokenizerFast, max_positions: int) -> LlamaForCausalLM:
    """A randomly initialised tiny Llama (demo)."""
    return LlamaForCausalLM(llama_config(llm, tokenizer, max_positions))
