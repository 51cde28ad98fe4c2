"""``instruct_llm``: the fMRI student — the teacher's projection + LLM tuned on aligned fMRI tokens.

Loss per caption token: cross-entropy on the reference caption + λ · T² · KL(teacher ‖ student), where the
teacher sees the clip's video tokens and the student the fMRI tokens of the same ``(segment, tr)``: the
student is taught to say what the video-conditioned model says.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F

from llm4brain.artifacts import atomic_path, read_captions, read_features, read_split
from llm4brain.models.video_llm import Captioner, encode_clips, load_teacher
from llm4brain.runtime import LOG, seed_everything
from llm4brain.training import fit


def distillation(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over caption tokens of T² · KL(softmax(teacher / T) ‖ softmax(student / T))."""
    t = F.log_softmax(teacher / temperature, dim=-1)
    s = F.log_softmax(student / temperature, dim=-1)
    kl = (t.exp() * (t - s)).sum(-1)
    return temperature**2 * (kl * mask).sum() / mask.sum().clamp(min=1)


def labelled_samples(latent_paths: list[str], subjects: list[str], heldout: list[str],
                     captions: dict[tuple[str, int], str]) -> tuple[torch.Tensor, list[tuple[str, int]]]:
    """Training-split fMRI tokens of the labelled subjects, and their ``(segment, tr)`` keys."""
    tokens, keys = [], []
    for subject, path in zip(subjects, latent_paths):
        if subject in heldout:
            continue
        data, split_keys = read_split(path, "align", "train", "tokens")
        keep = [i for i, key in enumerate(split_keys) if key in captions]
        tokens.append(data[keep])
        keys += [split_keys[i] for i in keep]
    return torch.from_numpy(np.concatenate(tokens).astype(np.float32)), keys


def instruct_llm(latent_paths: list[str], feature_paths: list[str], captions_path: str, teacher_dir: str,
                 model_dir: str, log_tsv: str, subjects: list[str], heldout: list[str], params: dict[str, Any],
                 seed: int) -> None:
    """Train the student and save what it trained (projection, and the LLM when tuned) as safetensors."""
    seed_everything(seed + 30, params["train"]["threads"])
    qformer, teacher, _ = load_teacher(teacher_dir)
    _, student, _ = load_teacher(teacher_dir)
    student.projection.requires_grad_(True)
    student.llm.requires_grad_(params["train_llm"])
    captions = read_captions(captions_path)
    tokens, keys = labelled_samples(latent_paths, subjects, heldout, captions)
    unique = sorted(set(keys))
    index = {k: i for i, k in enumerate(unique)}
    video = encode_clips(qformer, read_features(feature_paths), unique)
    texts = [captions[k] for k in keys]
    clip_of = torch.tensor([index[k] for k in keys])
    LOG.info("student: %d fMRI samples of %d clips from %s", len(keys), len(unique),
             [s for s in subjects if s not in heldout])

    generator = torch.Generator().manual_seed(seed + 31)
    batch_size, weight, temperature = params["train"]["batch_size"], params["distill_weight"], params["distill_temperature"]

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        student.train()
        idx = torch.randint(len(keys), (batch_size,), generator=generator)
        lm, logits, mask = student.caption_loss(tokens[idx], [texts[i] for i in idx.tolist()])
        terms = {"lm": float(lm)}
        loss = lm
        if weight > 0:
            ids = student.encode_captions([texts[i] for i in idx.tolist()])[0]
            with torch.no_grad():
                teacher_logits = teacher.caption_logits(video[clip_of[idx]], ids, mask)
            kd = distillation(logits, teacher_logits, mask, temperature)
            loss = loss + weight * kd
            terms["distill"] = float(kd)
        return loss, terms

    with atomic_path(model_dir) as tmp:
        tmp.mkdir(parents=True)
        fit(student.parameters(), loss_fn, params["train"], "instruct_llm", log_tsv)
        save_student(tmp, student, teacher_dir, params)


def save_student(directory: Path, student: Captioner, teacher_dir: str, params: dict[str, Any]) -> None:
    """Save only what was trained: ``projection.safetensors`` and, when tuned, the LLM (``llm/``, HF format)."""
    save_file({k: v.contiguous() for k, v in student.projection.state_dict().items()}, directory / "projection.safetensors")
    if params["train_llm"]:
        student.llm.save_pretrained(directory / "llm")
    config = {"base": str(teacher_dir), "train_llm": params["train_llm"], "instruct": params}
    (directory / "config.json").write_text(json.dumps(config, indent=2))


def load_student(directory: str | Path, teacher_dir: str | Path) -> Captioner:
    """The teacher's captioner with the student's trained weights loaded on top (frozen, eval mode)."""
    directory = Path(directory)
    _, student, _ = load_teacher(teacher_dir, llm_dir=directory / "llm" if (directory / "llm").is_dir() else None)
    student.projection.load_state_dict(load_file(directory / "projection.safetensors"))
    return student.eval()
