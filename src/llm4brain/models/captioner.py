"""``Captioner``: a linear projection of query tokens into a causal LM's embedding space, spliced into an
instruction template. The teacher (``models.video_llm``, or an InstructBLIP-Video checkpoint,
``models.instructblip_video``) captions video tokens with it; the fMRI student reuses it on aligned fMRI
tokens. Its own module so that both teachers' modules import it and not each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn

from llm4brain.distributed import global_mean
from llm4brain.runtime import autocast

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

IGNORE = -100


class Captioner(nn.Module):
    """Projection + causal LM around an instruction template whose ``{video}`` slot holds the tokens."""

    llm: PreTrainedModel | PeftModel  # the LLM as loaded, or the student's LoRA model on it (``instruct.llm_tuning``)
    prefix_ids: torch.Tensor
    suffix_ids: torch.Tensor

    def __init__(
        self,
        llm: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        token_dim: int,
        template: str,
        prompt: str,
        max_caption_tokens: int,
        bos_first: bool = True,
    ) -> None:
        super().__init__()
        self.llm = llm
        self.tokenizer = tokenizer
        self.projection = nn.Linear(token_dim, llm.config.hidden_size)
        self.max_caption_tokens = max_caption_tokens
        if template.count("{video}") != 1:
            raise ValueError(f"instruction template must contain '{{video}}' exactly once: {template!r}")
        before, after = template.split("{video}")  # BOS opens the prompt, or (InstructBLIP) follows the video
        self.register_buffer("prefix_ids", self._ids(before, bos=bos_first), persistent=False)
        self.register_buffer("suffix_ids", self._ids(after.format(prompt=prompt), bos=not bos_first), persistent=False)

    def _ids(self, text: str, bos: bool = False) -> torch.Tensor:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if bos and self.tokenizer.bos_token_id is not None:
            ids = [self.tokenizer.bos_token_id] + ids
        return torch.tensor(ids, dtype=torch.long)

    def prompt_embeds(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, Q, H) tokens → (B, P, E) embeddings of ``prefix · projection(tokens) · suffix``."""
        embed = self.llm.get_input_embeddings()
        b = tokens.shape[0]
        prefix = embed(self.prefix_ids).expand(b, -1, -1)
        suffix = embed(self.suffix_ids).expand(b, -1, -1)
        return torch.cat([prefix, self.projection(tokens).to(prefix.dtype), suffix], dim=1)

    def encode_captions(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Caption ids + EOS, right-padded, and their attention mask."""
        batch = self.tokenizer(
            [c + self.tokenizer.eos_token for c in captions],
            add_special_tokens=False,
            padding=True,
            truncation=True,
            max_length=self.max_caption_tokens,
            return_tensors="pt",
        )
        return batch["input_ids"].to(self.prefix_ids.device), batch["attention_mask"].to(self.prefix_ids.device)

    def caption_logits(self, tokens: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, L, V) predicting each caption token (position i predicts ids[:, i])."""
        prompt = self.prompt_embeds(tokens)
        embeds = torch.cat([prompt, self.llm.get_input_embeddings()(ids)], dim=1)
        attention = torch.cat([torch.ones(prompt.shape[:2], dtype=mask.dtype, device=mask.device), mask], dim=1)
        logits = self.llm(inputs_embeds=embeds, attention_mask=attention).logits
        p = prompt.shape[1]
        return logits[:, p - 1 : p - 1 + ids.shape[1]]

    def caption_loss(
        self, tokens: torch.Tensor, captions: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean cross-entropy over caption tokens (of the global batch, in a data-parallel job); also returns
        the logits, caption ids and mask, which distillation reuses."""
        ids, mask = self.encode_captions(captions)
        logits = self.caption_logits(tokens, ids, mask)
        labels = ids.masked_fill(mask == 0, IGNORE)
        total = nn.functional.cross_entropy(
            logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="sum"
        )
        return global_mean(total, (labels != IGNORE).sum()), logits, ids, mask

    @torch.inference_mode()
    def generate(
        self, tokens: torch.Tensor, max_new_tokens: int, num_beams: int = 1, repetition_penalty: float = 1.0
    ) -> list[str]:
        """Greedy (or beam) captions for a batch of token sets (moved to the captioner's device)."""
        embeds = self.prompt_embeds(tokens.to(self.prefix_ids.device))
        attention = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        # transformers types PreTrainedModel without GenerationMixin, which every causal LM class adds
        out = self.llm.generate(  # type: ignore[operator]
            inputs_embeds=embeds,
            attention_mask=attention,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            repetition_penalty=repetition_penalty,
            do_sample=False,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        return [text.strip() for text in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


class Decoding(Protocol):
    """The settings generation reads: the ``evaluate`` or the ``captions`` section (``EvaluateConfig``,
    ``CaptionsConfig``), or any object with these four fields."""

    @property
    def batch_size(self) -> int: ...
    @property
    def max_new_tokens(self) -> int: ...
    @property
    def num_beams(self) -> int: ...
    @property
    def repetition_penalty(self) -> float: ...


def generate_captions(captioner: Captioner, tokens: torch.Tensor, decoding: Decoding) -> list[str]:
    """Batched generation on the captioner's device (bf16 autocast on CUDA).

    Args:
        captioner: the student's or the teacher's captioner.
        tokens: one token set per caption, (n, Q, H).
        decoding: the decoding settings; ``batch_size`` changes memory, not the captions.

    Returns:
        One caption per token set, stripped.
    """
    out: list[str] = []
    with autocast(captioner.prefix_ids.device):
        for start in range(0, len(tokens), decoding.batch_size):
            out += captioner.generate(
                tokens[start : start + decoding.batch_size],
                decoding.max_new_tokens,
                decoding.num_beams,
                decoding.repetition_penalty,
            )
    return out
