"""The fMRI student: (optionally) the brain aligner, then the teacher's projection + LLM, tuned.

``input: encoder`` trains end to end from fMRI volumes through the aligner (encoder + adaptors; the
Q-Former base stays frozen), so the caption loss can use what the brain encodes beyond the video tokens.
``input: latents`` reads the frozen tokens the align stage wrote. ``encoder_tokens`` (end to end only) also
hands the LLM the encoder's own tokens, mapped into the Q-Former's output space, after the aligned ones: the
Q-Former's queries learnt to keep what the video tokens hold, and the brain may encode more (on the demo, the
shape, motion and count that the random-init ViT cannot see).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from torch import nn

from llm4brain.align.model import BrainAligner, in_batches, load_aligner, save_aligner
from llm4brain.fmri.stream import SampleRows, open_splits
from llm4brain.instruct.llm_tuning import load_adapter, save_tuned
from llm4brain.models.captioner import Captioner
from llm4brain.models.video_llm import load_teacher, load_video_qformer
from llm4brain.models.weights import load_weights, save_weights
from llm4brain.sections import InstructConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class StudentEncoder:
    """What turns fMRI into the tokens a student's projection reads: its aligner and, with
    ``encoder_tokens``, the map of the encoder's own tokens (None, None: the student reads the align stage's
    tokens as they are). No LLM: nearest-train retrieval needs only this part (:func:`load_student_encoder`)."""

    aligner: BrainAligner | None
    encoder_map: nn.Linear | None

    @property
    def input_kind(self) -> str:
        return "encoder" if self.aligner is not None else "latents"

    @property
    def window(self) -> int:
        """TR volumes per encoder input (1 for latents)."""
        return self.aligner.encoder_config.window if self.aligner is not None else 1

    def tokens(self, inputs: torch.Tensor, subjects: torch.Tensor | None = None) -> torch.Tensor:
        """(B, W, ...) fMRI windows through the aligner (+ the encoder's tokens, mapped), or (B, Q, H) tokens
        as they are; ``subjects``: each window's index among the aligner's subjects, when it has their
        input layers."""
        if self.aligner is None:
            return inputs
        encoded = self.aligner.encoder(self.aligner.inputs(inputs, subjects))
        aligned = self.aligner.align(encoded)
        return aligned if self.encoder_map is None else torch.cat([aligned, self.encoder_map(encoded)], dim=1)

    def encode(
        self, inputs: torch.Tensor, device: torch.device, batch_size: int = 128, subject: str | None = None
    ) -> torch.Tensor:
        """Tokens for decoding, in eval mode: ``subject``'s fMRI windows in batches on ``device`` (returned on
        the CPU in float32), or the given tokens."""
        aligner = self.aligner
        if aligner is None:
            return inputs
        for module in (aligner, self.encoder_map):
            if module is not None:
                module.eval()
        return in_batches(
            lambda batch: self.tokens(batch, aligner.subject_index(subject, len(batch))), inputs, device, batch_size
        )


ENCODER_MAP = "encoder_tokens.safetensors"  # the encoder map's weights in a student's model folder


def encoder_map(aligner: BrainAligner) -> nn.Linear:
    """``encoder_tokens``' map of the encoder's tokens into the Q-Former's output space, which the projection
    takes, on the aligner's device (randomly initialised)."""
    return nn.Linear(aligner.encoder_config.dim, aligner.qformer.config.hidden_size, device=aligner.logit_scale.device)


def saved_instruct(directory: Path) -> InstructConfig:
    """The ``instruct`` section a student's model folder was trained with (its ``config.json``)."""
    config_path = directory / "config.json"
    return InstructConfig.from_dict(json.loads(config_path.read_text())["instruct"], source=config_path)


class FmriStudent(nn.Module):
    """fMRI input (volumes or aligned tokens) → tokens (its :class:`StudentEncoder`) → captions."""

    def __init__(self, captioner: Captioner, aligner: BrainAligner | None, encoder_tokens: bool = False) -> None:
        super().__init__()
        if encoder_tokens and aligner is None:
            raise ValueError("encoder_tokens needs the end-to-end student (input: encoder)")
        self.captioner = captioner
        self.aligner = aligner
        self.encoder_map = encoder_map(aligner) if encoder_tokens and aligner is not None else None

    @property
    def encoder(self) -> StudentEncoder:
        return StudentEncoder(self.aligner, self.encoder_map)

    @property
    def input_kind(self) -> str:
        return self.encoder.input_kind

    @property
    def window(self) -> int:
        """TR volumes per encoder input (1 for latents)."""
        return self.encoder.window

    def tokens(self, inputs: torch.Tensor, subjects: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder.tokens(inputs, subjects)

    def encode(self, inputs: torch.Tensor, batch_size: int = 128, subject: str | None = None) -> torch.Tensor:
        """:meth:`StudentEncoder.encode` on the student's device, the whole student in eval mode."""
        return self.eval().encoder.encode(inputs, self.captioner.prefix_ids.device, batch_size, subject)


def student_inputs(
    kind: str, fmri_paths: list[str], latent_paths: list[str], split: str, window: int = 1
) -> tuple[SampleRows, list[tuple[str, int]]]:
    """Subjects' student inputs for ``split``, on disk, in file order: windows of preprocessed fMRI (encoder)
    or aligned tokens (latents), and each sample's ``(segment, tr)``."""
    paths = fmri_paths if kind == "encoder" else latent_paths
    files = open_splits(paths, split, *(("fmri", "bold") if kind == "encoder" else ("align", "tokens")))
    keys = [key for f in files for key in f.keys()]
    file_index = np.concatenate([np.full(f.n_rows, i) for i, f in enumerate(files)]).astype(np.int64)
    rows = np.concatenate([np.arange(f.n_rows) for f in files]).astype(np.int64)
    return SampleRows(files, file_index, rows, window if kind == "encoder" else None), keys


def save_student(
    directory: Path, student: FmriStudent, teacher_dir: str, align_dir: str, instruct: InstructConfig
) -> None:
    """Save what was trained: projection, the LLM or its LoRA adapter (see ``llm_tuning.save_tuned``), the
    aligner when trained end to end; config.json names the teacher and aligner it builds on."""
    captioner = student.captioner
    save_weights(captioner.projection, directory / "projection.safetensors")
    save_tuned(captioner.llm, directory, instruct.llm)
    if student.aligner is not None:
        save_aligner(directory / "aligner", student.aligner, teacher_dir)
    if student.encoder_map is not None:
        save_weights(student.encoder_map, directory / ENCODER_MAP)
    config = {
        "teacher": str(teacher_dir),
        "align": str(align_dir),
        "input": student.input_kind,
        "instruct": instruct.to_dict(),
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))


def load_student(
    directory: str | Path, teacher_dir: str | Path, device: torch.device = torch.device("cpu")
) -> FmriStudent:
    """Rebuild the student on top of the teacher's files, on ``device`` (frozen, eval mode).

    Args:
        directory: the student's model folder (``results/r{seed}/instruct/model``, written by rule
            ``instruct_llm``): its ``config.json``, ``projection.safetensors``, the tuned LLM or its LoRA
            adapter and, for an end-to-end student, ``aligner/``.
        teacher_dir: the teacher the student was trained on (``results/video_llm`` or
            ``results/r{seed}/video_llm``; the student's ``config.json`` names it), whose tokenizer, LLM and
            Q-Former it is built on.
        device: the device the student is loaded on.

    Returns:
        The student; its ``input_kind`` says whether it reads fMRI windows through its aligner (``encoder``)
            or the align stage's frozen tokens (``latents``).
    """
    directory = Path(directory)
    instruct = saved_instruct(directory)
    llm = instruct.llm
    qformer, captioner, _ = load_teacher(
        teacher_dir,
        device,
        llm_dir=directory / "llm" if llm.tuning == "full" else None,
        quantization=llm.quantization,
    )
    captioner.llm = load_adapter(cast("PreTrainedModel", captioner.llm), directory, llm)  # as load_teacher loaded it
    load_weights(captioner.projection, directory / "projection.safetensors")
    aligner = load_aligner(directory / "aligner", qformer).to(device) if (directory / "aligner").is_dir() else None
    student = FmriStudent(captioner, aligner, instruct.encoder_tokens)
    if student.encoder_map is not None:
        load_weights(student.encoder_map, directory / ENCODER_MAP)
    return student.eval().requires_grad_(False)


def load_student_encoder(directory: str | Path, teacher_dir: str | Path, device: torch.device) -> StudentEncoder:
    """The :class:`StudentEncoder` of a student saved by :func:`save_student`, on ``device`` (frozen, eval
    mode), without its LLM: the teacher's Q-Former only (:func:`~llm4brain.models.video_llm.load_video_qformer`).
    It encodes exactly as :func:`load_student`'s student does, for a fraction of the memory and reading (a
    7B LLM is never loaded).

    Args:
        directory: the student's model folder (``results/r{seed}/instruct/model``).
        teacher_dir: the teacher the student was trained on.
        device: the device the encoder is loaded on.
    """
    directory = Path(directory)
    instruct = saved_instruct(directory)
    if not (directory / "aligner").is_dir():
        return StudentEncoder(None, None)
    aligner = load_aligner(directory / "aligner", load_video_qformer(teacher_dir)).to(device).requires_grad_(False)
    mapped = None
    if instruct.encoder_tokens:
        mapped = encoder_map(aligner)
        load_weights(mapped, directory / ENCODER_MAP)
        mapped.eval().requires_grad_(False)
    return StudentEncoder(aligner, mapped)
