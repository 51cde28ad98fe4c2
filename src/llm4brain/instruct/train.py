"""``instruct_llm``: tune the fMRI student on the labelled subjects' training clips.

Loss per caption token: cross-entropy on the reference caption + λ · T² · KL(teacher ‖ student), where the
teacher sees the clip's video tokens and the student the fMRI of the same ``(segment, tr)``: the student is
taught to say what the video-conditioned model says.
"""

from __future__ import annotations

import contextlib
import copy
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from torch.nn import functional as F

from llm4brain.align.model import load_aligner
from llm4brain.artifacts import FeatureFiles, read_captions
from llm4brain.distributed import global_mean, world
from llm4brain.fmri.stream import SampleRows
from llm4brain.instruct.llm_tuning import tune
from llm4brain.instruct.student import FmriStudent, save_student, student_inputs
from llm4brain.models.captioner import Captioner
from llm4brain.models.video_llm import encode_clips, load_teacher
from llm4brain.resume import Checkpoint
from llm4brain.runtime import LOG
from llm4brain.sections import InstructConfig, InstructLlmConfig
from llm4brain.seeds import SeedOffset
from llm4brain.training import begin_stage, fit, model_folder, validation_clips, validation_loss

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

    from llm4brain.models.instructblip_video import InstructionQFormer
    from llm4brain.models.video_llm import VideoQFormer


def distillation(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over caption tokens (of the global batch, in a data-parallel job) of
    T² · KL(softmax(teacher / T) ‖ softmax(student / T))."""
    t = F.log_softmax(teacher / temperature, dim=-1)
    s = F.log_softmax(student / temperature, dim=-1)
    kl = (t.exp() * (t - s)).sum(-1)
    return global_mean(temperature**2 * (kl * mask).sum(), mask.sum())


def shares_base(llm: InstructLlmConfig) -> bool:
    """LoRA on an unquantised base leaves the base exactly the teacher's LLM: one copy serves both."""
    return llm.tuning == "lora" and llm.quantization == "none"


def build_student(
    teacher_dir: str,
    align_dir: str,
    instruct: InstructConfig,
    device: torch.device = torch.device("cpu"),
    teacher: tuple[VideoQFormer | InstructionQFormer, Captioner] | None = None,
) -> FmriStudent:
    """The teacher's captioner (+ the aligned encoder) on ``device``, with the parts the section trains
    unfrozen.

    Args:
        teacher_dir: the teacher's folder (``video_llm``), loaded unless ``teacher`` is given.
        align_dir: the aligner's model folder (``align/model``), loaded when ``instruct.input`` is
            ``encoder``.
        instruct: the ``instruct`` section: ``input``, ``llm`` (tuning, quantization, LoRA),
            ``train_encoder``, ``train_qformer``, ``encoder_tokens``.
        device: where the student is built.
        teacher: the teacher's Q-Former and captioner, loaded already: copied instead of loaded again, its
            LLM shared, not copied (only for :func:`shares_base` settings, where the student's LLM is LoRA
            on it).

    Returns:
        The student, its trained parts requiring gradients.
    """
    if teacher is not None:
        qformer, base = teacher
        captioner = copy.deepcopy(base, memo={id(base.llm): base.llm})
    else:
        qformer, captioner, _ = load_teacher(teacher_dir, device, quantization=instruct.llm.quantization)
    captioner.projection.requires_grad_(True)
    captioner.llm = tune(cast("PreTrainedModel", captioner.llm), instruct.llm)  # the teacher's, untuned
    aligner = None
    if instruct.input == "encoder":
        aligner = load_aligner(align_dir, qformer).to(device)
        for name, param in aligner.named_parameters():
            if name.startswith(("encoder.", "to_context.", "subject_layers.")):
                param.requires_grad_(instruct.train_encoder)
            else:
                param.requires_grad_(instruct.train_qformer or not name.startswith("qformer.") or ".adaptor." in name)
    return FmriStudent(captioner, aligner, instruct.encoder_tokens)


@torch.no_grad()
def frozen_logits(
    teacher: Captioner, student: FmriStudent, tokens: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The teacher's caption logits. When it shares its LLM with the student's LoRA model, the adapters are
    switched off around the call, so these are the frozen base's logits, as from a separate copy."""
    llm = student.captioner.llm
    lora = cast("PeftModel", llm) if hasattr(llm, "disable_adapter") else None  # peft's LoRA model on a base
    shared = lora if lora is not None and lora.get_base_model() is teacher.llm else None
    with shared.disable_adapter() if shared is not None else contextlib.nullcontext():
        return teacher.caption_logits(tokens, ids, mask)


def instruct_llm(
    *,
    fmri_paths: list[str],
    latent_paths: list[str],
    align_dir: str,
    feature_paths: list[str],
    captions_path: str,
    teacher_dir: str,
    model_dir: str,
    log_tsv: str,
    subjects: list[str],
    heldout: list[str],
    instruct: InstructConfig,
    seed: int,
    checkpoint: Checkpoint | None = None,
) -> None:
    """Train the student and save what it trained as safetensors (see ``student.save_student``)."""
    device = begin_stage(instruct.train, seed + SeedOffset.INSTRUCT)
    batch_size, weight, temperature = instruct.train.batch_size, instruct.distill_weight, instruct.distill_temperature
    # the frozen teacher only serves distillation: without it (the no_distillation ablation) it is not loaded
    frozen = load_teacher(teacher_dir, device)[:2] if weight > 0 else None  # (Q-Former, captioner)
    teacher = frozen[1] if frozen is not None else None
    shared = frozen if frozen is not None and shares_base(instruct.llm) else None  # copied, its LLM shared
    student = build_student(teacher_dir, align_dir, instruct, device, shared)
    captions = read_captions(captions_path)
    labelled = [i for i, subject in enumerate(subjects) if subject not in heldout]
    # each training file's subject index among the aligner's subjects (its input layers), when it has them
    aligner = student.aligner
    layer_of = aligner.subject_indices([subjects[i] for i in labelled]) if aligner is not None else None
    every, split_keys = student_inputs(
        instruct.input,
        [fmri_paths[i] for i in labelled],
        [latent_paths[i] for i in labelled],
        "train",
        student.window,
    )
    keep = np.array([i for i, key in enumerate(split_keys) if key in captions], np.int64)
    unique = sorted({split_keys[i] for i in keep.tolist()})
    val_clips = validation_clips(
        unique, instruct.train.val_fraction, torch.Generator().manual_seed(seed + SeedOffset.INSTRUCT_VALIDATION)
    )
    validated = np.array([split_keys[i] in val_clips for i in keep.tolist()], bool)
    # the samples stay on disk: a batch's windows are read when it is drawn
    inputs, val_inputs = (
        SampleRows(every.files, every.file_index[k], every.rows[k], every.window)
        for k in (keep[~validated], keep[validated])
    )
    keys = [split_keys[i] for i in keep[~validated].tolist()]
    val_keys = [split_keys[i] for i in keep[validated].tolist()]
    if frozen is not None:  # the video tokens the teacher captions each training clip from: (Q, H) per clip
        video = encode_clips(frozen[0], FeatureFiles(feature_paths), unique).to(device)
        index = {k: i for i, k in enumerate(unique)}
    LOG.info(
        "student (%s input): %d fMRI samples of %d clips from %s (%d samples of %d more clips to validate on)",
        instruct.input,
        len(keys),
        len(unique) - len(val_clips),
        [s for s in subjects if s not in heldout],
        len(val_keys),
        len(val_clips),
    )

    def batch_loss(
        samples: SampleRows, sample_keys: list[tuple[str, int]], idx: list[int]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The student's loss on samples ``idx``: the caption's cross-entropy, plus the weighted
        distillation toward the teacher's captions of the same clips."""
        batch_keys, rows = [sample_keys[i] for i in idx], np.array(idx, np.int64)
        whose = layer_of[torch.from_numpy(samples.file_index[rows]).to(device)] if layer_of is not None else None
        lm, logits, ids, mask = student.captioner.caption_loss(
            student.tokens(samples.take(rows).to(device), whose), [captions[k] for k in batch_keys]
        )
        terms = {"lm": lm.item()}
        loss = lm
        if teacher is not None:
            clips = video[torch.tensor([index[k] for k in batch_keys], device=device)]
            kd = distillation(logits, frozen_logits(teacher, student, clips, ids, mask), mask, temperature)
            loss = loss + weight * kd
            terms["distill"] = kd.item()
        return loss, terms

    generator = torch.Generator().manual_seed(seed + SeedOffset.INSTRUCT_BATCHES)
    shard = world()

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        student.train()
        idx = shard.share(torch.randint(len(keys), (batch_size,), generator=generator))  # of the global batch
        return batch_loss(inputs, keys, idx.tolist())

    def validate() -> float:
        """The loss on every validation sample, in eval mode."""
        student.eval()
        return validation_loss(
            range(len(val_keys)), batch_size, lambda idx: batch_loss(val_inputs, val_keys, list(idx))[0]
        )

    fit(
        student,
        loss_fn,
        instruct.train,
        "instruct_llm",
        log_tsv,
        checkpoint=checkpoint,
        generators=[generator],
        validate=validate if val_keys else None,
        device=device,
    )
    if not shard.main:
        return
    with model_folder(model_dir) as tmp:
        save_student(tmp, student.eval(), teacher_dir, align_dir, instruct)
