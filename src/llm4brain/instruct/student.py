"""The fMRI student: (optionally) the brain aligner, then the teacher's projection + LLM, tuned.

``input: encoder`` trains end to end from fMRI volumes through the aligner (encoder + adaptors; the
Q-Former base stays frozen), so the caption loss can use what the brain encodes beyond the video tokens.
``input: latents`` reads the frozen tokens the align stage wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from llm4brain.align.model import BrainAligner, load_aligner, save_aligner
from llm4brain.align.windows import windows
from llm4brain.artifacts import read_split
from llm4brain.instruct.llm_tuning import load_adapter, save_tuned
from llm4brain.models.video_llm import Captioner, load_teacher
from llm4brain.models.weights import load_weights, save_weights


class FmriStudent(nn.Module):
    """fMRI input (volumes or aligned tokens) → tokens → captions."""

    def __init__(self, captioner: Captioner, aligner: BrainAligner | None) -> None:
        super().__init__()
        self.captioner = captioner
        self.aligner = aligner

    @property
    def input_kind(self) -> str:
        return "encoder" if self.aligner is not None else "latents"

    @property
    def window(self) -> int:
        """TR volumes per encoder input (1 for latents)."""
        return self.aligner.config["encoder"]["window"] if self.aligner is not None else 1

    def tokens(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, W, ...) fMRI windows through the aligner, or (B, Q, H) tokens as they are."""
        return self.aligner(inputs) if self.aligner is not None else inputs

    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        """Tokens for decoding: fMRI windows through the aligner in batches, or the given tokens."""
        return self.aligner.encode(inputs) if self.aligner is not None else inputs


def read_inputs(kind: str, fmri_path: str, latent_path: str, split: str,
                window: int = 1) -> tuple[torch.Tensor, list[tuple[str, int]]]:
    """A subject's student inputs for ``split``: windows of preprocessed fMRI (encoder) or aligned tokens
    (latents)."""
    if kind == "encoder":
        data, keys = read_split(fmri_path, "fmri", split, "bold")
        data = windows(data, keys, window)
    else:
        data, keys = read_split(latent_path, "align", split, "tokens")
    return torch.from_numpy(data.astype(np.float32)), keys


def save_student(directory: Path, student: FmriStudent, teacher_dir: str, align_dir: str, params: dict[str, Any]) -> None:
    """Save what was trained: projection, the LLM or its LoRA adapter (see ``llm_tuning.save_tuned``), the
    aligner when trained end to end; config.json names the teacher and aligner it builds on."""
    captioner = student.captioner
    save_weights(captioner.projection, directory / "projection.safetensors")
    save_tuned(captioner.llm, directory, params["llm"])
    if student.aligner is not None:
        save_aligner(directory / "aligner", student.aligner, teacher_dir)
    config = {"teacher": str(teacher_dir), "align": str(align_dir), "input": student.input_kind, "instruct": params}
    (directory / "config.json").write_text(json.dumps(config, indent=2))


def load_student(directory: str | Path, teacher_dir: str | Path,
                 device: torch.device = torch.device("cpu")) -> FmriStudent:
    """Rebuild the student on top of the teacher's files, on ``device`` (frozen, eval mode)."""
    directory = Path(directory)
    llm = json.loads((directory / "config.json").read_text())["instruct"]["llm"]
    qformer, captioner, _ = load_teacher(teacher_dir, device,
                                         llm_dir=directory / "llm" if llm["tuning"] == "full" else None,
                                         quantization=llm["quantization"])
    captioner.llm = load_adapter(captioner.llm, directory, llm)
    load_weights(captioner.projection, directory / "projection.safetensors")
    aligner = load_aligner(directory / "aligner", qformer).to(device) if (directory / "aligner").is_dir() else None
    return FmriStudent(captioner, aligner).eval().requires_grad_(False)
