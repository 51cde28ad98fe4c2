"""A local InstructBLIP checkpoint run as InstructBLIP-Video (transformers
``InstructBlipVideoForConditionalGeneration``, which loads e.g. ``Salesforce/instructblip-vicuna-7b`` as it
is) as the teacher.

Its parts take the tiny teacher's roles, so alignment, the student and decoding run unchanged:
``InstructionQFormer`` is the video Q-Former (the checkpoint's instruction-aware Q-Former on each frame's
cached ViT tokens, the frames' query outputs concatenated as the checkpoint does), and ``Captioner`` wraps
its ``language_projection`` and Vicuna / LLaMA with the checkpoint's tokenizer: video tokens first, then
BOS and the prompt, as ``InstructBlipVideoProcessor`` lays them out.

``import_video_llm`` checks the checkpoint and writes ``results/video_llm/config.json`` naming it
(``video_llm.checkpoint``); :func:`load_instructblip_video` loads from those settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from llm4brain.models.captioner import Captioner
from llm4brain.models.quantization import keep_4bit_training_layout, quantized_loading
from llm4brain.models.weights import load_state, read_prefixed

if TYPE_CHECKING:
    from transformers import InstructBlipVideoQFormerConfig, InstructBlipVideoQFormerModel

MODEL_TYPES = ("instructblip", "instructblipvideo")  # the video model loads image InstructBLIP weights as they are
FRAMES = 4  # InstructBLIP-Video is trained on 4 frames per clip and lays out 4 x num_query_tokens video tokens
FULL_PRECISION = ["vision_model", "qformer", "language_projection", "lm_head"]  # never quantised


class InstructionQFormer(nn.Module):
    """ViT tokens of a clip (B, F, T, D) → video tokens (B, F·Q, H), the interface of ``VideoQFormer``."""

    instruction_ids: torch.Tensor

    def __init__(
        self,
        qformer: InstructBlipVideoQFormerModel,
        query_tokens: torch.Tensor,
        instruction_ids: torch.Tensor,
        num_frames: int = FRAMES,
    ) -> None:
        super().__init__()
        self.qformer = qformer
        self.config = qformer.config
        self.query_tokens = nn.Parameter(query_tokens.detach().float().clone())
        self.register_buffer("instruction_ids", instruction_ids.reshape(1, -1), persistent=False)
        self.num_frames = num_frames

    def queries(self, context: torch.Tensor) -> torch.Tensor:
        """(N, T, D) context → (N, Q, H): the query outputs, the instruction tokens attended alongside."""
        n, q = context.shape[0], self.query_tokens.shape[1]
        ids = self.instruction_ids.expand(n, -1)
        mask = torch.ones(n, q + ids.shape[1], dtype=torch.long, device=context.device)
        out = self.qformer(
            input_ids=ids,
            attention_mask=mask,
            query_embeds=self.query_tokens.expand(n, -1, -1),
            encoder_hidden_states=context,
        ).last_hidden_state
        return out[:, :q]

    def attend(self, context: torch.Tensor) -> torch.Tensor:
        """fMRI context (B, N, D) → (B, F·Q, H): one TR has no frames, so its query outputs fill every frame
        slot of the layout the LLM was trained on."""
        return self.queries(context).repeat(1, self.num_frames, 1)

    def forward(self, clip_tokens: torch.Tensor) -> torch.Tensor:
        b, f, t, d = clip_tokens.shape
        if f != self.num_frames:
            raise ValueError(
                f"InstructBLIP-Video expects {self.num_frames} frames per clip, got {f} (set video.frames_per_tr)"
            )
        out = self.queries(clip_tokens.reshape(b * f, t, d))
        return out.reshape(b, f * out.shape[1], out.shape[2])


def instruction_ids(directory: Path, settings: dict[str, Any]) -> torch.Tensor:
    """The prompt in the Q-Former's own (BERT) tokens, as ``InstructBlipVideoProcessor`` gives them."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory / "qformer_tokenizer")(settings["prompt"], return_tensors="pt")[
        "input_ids"
    ]


def load_instruction_qformer(settings: dict[str, Any]) -> InstructionQFormer:
    """Only the checkpoint's Q-Former and query tokens (fp32, frozen), read from its safetensors shards:
    alignment needs nothing else, and a 7B LLM is never loaded for it."""
    from transformers import InstructBlipVideoConfig, InstructBlipVideoQFormerModel

    directory = Path(settings["checkpoint"])
    # the composite config's __post_init__ turns its qformer_config into this class; the field is declared looser
    config = cast("InstructBlipVideoQFormerConfig", InstructBlipVideoConfig.from_pretrained(directory).qformer_config)
    qformer = InstructBlipVideoQFormerModel(config)
    load_state(qformer, read_prefixed(directory, "qformer."), directory)
    query_tokens = read_prefixed(directory, "query_tokens")[""]
    module = InstructionQFormer(
        qformer.float(), query_tokens, instruction_ids(directory, settings), settings["num_frames"]
    )
    return module.eval().requires_grad_(False)


def load_instructblip_video(
    settings: dict[str, Any],
    device: torch.device | str = "cpu",
    llm_dir: str | Path | None = None,
    quantization: str = "none",
) -> tuple[InstructionQFormer, Captioner, dict[str, Any]]:
    """The checkpoint named by ``settings`` as (video Q-Former, captioner), frozen, on ``device``.

    The LLM is loaded in ``settings['dtype']`` (or quantised; vision tower, Q-Former and projection never
    are); Q-Former and projection then run in fp32, where their adaptors train. ``llm_dir`` swaps in a
    fully tuned copy of the LLM. The vision tower is dropped: the features were cached by ``cache_features``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, InstructBlipVideoForConditionalGeneration

    directory = Path(settings["checkpoint"])
    dtype = getattr(torch, settings["dtype"]) if settings["dtype"] != "auto" else "auto"
    model = InstructBlipVideoForConditionalGeneration.from_pretrained(
        directory, use_safetensors=True, dtype=dtype, **quantized_loading(quantization, device, FULL_PRECISION)
    )
    keep_4bit_training_layout(model)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    if tokenizer.pad_token is None:  # LLaMA tokenizers ship without one; captions are right-padded and masked
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    qformer = InstructionQFormer(
        model.qformer.float(), model.query_tokens, instruction_ids(directory, settings), settings["num_frames"]
    )
    llm = AutoModelForCausalLM.from_pretrained(llm_dir, use_safetensors=True) if llm_dir else model.language_model
    captioner = Captioner(
        llm,
        tokenizer,
        qformer.config.hidden_size,  # the checkpoint's Q-Former config (model.config.qformer_config)
        settings["template"],
        settings["prompt"],
        settings["max_caption_tokens"],
        bos_first=False,
    )
    captioner.projection = model.language_projection.float()
    for module in (qformer, captioner):
        module.to(device).eval().requires_grad_(False)
    return qformer, captioner, settings
