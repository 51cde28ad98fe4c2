"""``train_video_llm``: teach a tiny video Q-Former + Llama to caption the training clips.

On real data a pretrained Video-LLaMA / InstructBLIP-Video plays this role; the demo has none, so it learns
one from the cached vision tokens and the reference captions of the training segments only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from llm4brain.artifacts import FeatureFiles, read_captions
from llm4brain.distributed import world
from llm4brain.models.captioner import Captioner
from llm4brain.models.tokenizer import train_word_tokenizer
from llm4brain.models.video_llm import VideoQFormer, build_llm, qformer_config, save_teacher
from llm4brain.resume import Checkpoint
from llm4brain.runtime import LOG
from llm4brain.sections import VideoLlmConfig
from llm4brain.seeds import SeedOffset
from llm4brain.training import begin_stage, fit, model_folder, validation_clips, validation_loss


def training_clips(
    features: FeatureFiles, captions: dict[tuple[str, int], str], segments: list[str]
) -> list[tuple[str, int]]:
    """The ``(segment, tr)`` keys of ``segments`` that have both cached features and a caption."""
    missing = [segment for segment in segments if segment not in features]
    if missing:
        raise ValueError(f"no cached features for segment {missing[0]!r}")
    return [(segment, k) for segment in segments for k in range(features.n_tr[segment]) if (segment, k) in captions]


def train_video_llm(
    *,
    feature_paths: list[str],
    captions_path: str,
    out_dir: str | Path,
    train_segments: list[str],
    video_llm: VideoLlmConfig,
    seed: int,
    checkpoint: Checkpoint | None = None,
) -> None:
    """Train and save the teacher (see ``models.video_llm`` for the directory layout)."""
    device = begin_stage(video_llm.train, seed + SeedOffset.VIDEO_LLM)
    captions = read_captions(captions_path)
    features = FeatureFiles(feature_paths)
    every = training_clips(features, captions, train_segments)
    texts = [captions[k] for k in every]  # the tokenizer's: every training caption
    held = validation_clips(
        every, video_llm.train.val_fraction, torch.Generator().manual_seed(seed + SeedOffset.VIDEO_LLM_VALIDATION)
    )
    keys, val_keys = [k for k in every if k not in held], [k for k in every if k in held]
    n, (num_frames, num_tokens, vision_dim) = len(keys), features.clip_shape

    def clips(of: list[tuple[str, int]]) -> torch.Tensor:
        """(k, F, T, D) float32 tokens of clips ``of``, read from disk: only a batch is in memory."""
        return torch.from_numpy(features.clips(of).astype(np.float32))

    LOG.info(
        "teacher: %d training clips (%d more to validate on), %d frames x %d tokens x %d dims",
        *(n, len(val_keys), num_frames, num_tokens, vision_dim),
    )

    template, prompt, max_caption_tokens = video_llm.template, video_llm.prompt, video_llm.max_caption_tokens
    tokenizer = train_word_tokenizer(texts + [template.replace("{video}", " ").format(prompt=prompt)])
    q = video_llm.qformer
    qformer = VideoQFormer(qformer_config(q, vision_dim), num_frames, q.num_queries)
    max_positions = 2 * (q.num_queries + len(template.split()) + len(prompt.split())) + max_caption_tokens + 16
    llm = build_llm(video_llm.llm, tokenizer, max_positions)
    captioner = Captioner(llm, tokenizer, q.hidden_size, template, prompt, max_caption_tokens)
    model = nn.ModuleDict({"qformer": qformer, "captioner": captioner}).to(device).train()

    generator = torch.Generator().manual_seed(seed + SeedOffset.VIDEO_LLM_BATCHES)
    batch_size, shard = video_llm.train.batch_size, world()

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        model.train()
        idx = shard.share(torch.randint(n, (batch_size,), generator=generator))  # of the global batch
        return batch_loss([keys[i] for i in idx.tolist()]), {}

    def batch_loss(batch: Sequence[tuple[str, int]]) -> torch.Tensor:
        """The caption loss on clips ``batch`` (mean over caption tokens)."""
        return captioner.caption_loss(qformer(clips(list(batch)).to(device)), [captions[k] for k in batch])[0]

    def validate() -> float:
        """The caption loss on every validation clip, in eval mode."""
        model.eval()
        return validation_loss(val_keys, batch_size, batch_loss)

    history = fit(
        model,
        loss_fn,
        video_llm.train,
        "train_video_llm",
        checkpoint=checkpoint,
        generators=[generator],
        validate=validate if val_keys else None,
        device=device,
    )
    if not shard.main:
        return
    with model_folder(out_dir, history) as tmp:
        model.eval()
        settings = {"template": template, "prompt": prompt, "max_caption_tokens": max_caption_tokens}
        save_teacher(tmp, qformer, captioner, {**settings, "train_segments": train_segments, "vision_dim": vision_dim})
        with torch.inference_mode():
            sample = captioner.generate(qformer(clips(keys[:4]).to(device)), max_caption_tokens)
        for key, text in zip(keys[:4], sample, strict=True):
            LOG.info("teacher on %s: %r (reference %r)", key, text, captions[key])
