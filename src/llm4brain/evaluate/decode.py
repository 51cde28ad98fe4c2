"""``decode_captions``: one caption per test sample of a subject, from four sources.

- ``fmri``: the student on the subject's aligned fMRI tokens;
- ``video-teacher``: the teacher on the clip's video tokens (what the student is distilled toward);
- ``shuffled``: the student on the same subject's fMRI tokens with rows permuted (chance with the same
  language prior);
- ``nearest-train``: the reference caption of the most similar training sample (cosine of pooled tokens)
  among the labelled subjects (tokens from the same student input) — what retrieval alone achieves. The
  pool is encoded once per replicate (``nearest_train_pool``).

Rule ``decode_ablation`` (:func:`decode_captions` with ``ablation``) adds ``fmri-{ablation}``: the fMRI decoded
by a student built on an aligner trained with one loss term off (``no_domain_adaptation``, for the held-out
subjects), or trained itself with one term off (``no_distillation``, for every subject).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch

from llm4brain.artifacts import (
    FeatureFiles,
    atomic_h5,
    open_artifact,
    read_captions,
    read_keys,
    set_attrs,
    write_keys,
    write_strings,
)
from llm4brain.fmri.stream import SampleRows
from llm4brain.instruct.student import (
    FmriStudent,
    StudentEncoder,
    load_student,
    load_student_encoder,
    student_inputs,
)
from llm4brain.models.captioner import generate_captions
from llm4brain.models.video_llm import encode_clips, load_teacher
from llm4brain.runtime import LOG, seed_everything, select_device
from llm4brain.sections import EvaluateConfig
from llm4brain.seeds import SeedOffset


def pooled(tokens: torch.Tensor) -> torch.Tensor:
    """(n, Q, H) tokens → (n, H): each sample's tokens averaged, unit length (what retrieval compares)."""
    return torch.nn.functional.normalize(tokens.mean(1), dim=-1)


def nearest_captions(
    query: torch.Tensor, pool: torch.Tensor, pool_keys: list[tuple[str, int]], captions: dict[tuple[str, int], str]
) -> list[str]:
    """Caption of the pool sample whose pooled tokens (``pool``, from :func:`pooled`) are most similar
    (cosine) to each query's."""
    return [captions[pool_keys[i]] for i in (pooled(query) @ pool.T).argmax(1).tolist()]


def encoded(
    encoder: StudentEncoder, inputs: SampleRows, device: torch.device, subject: str, batch_size: int = 128
) -> Iterator[torch.Tensor]:
    """A student's tokens for ``subject``'s ``inputs``, a batch at a time on ``device``, read from disk as they
    go."""
    for batch in inputs.batches(batch_size):
        yield encoder.encode(batch, device, batch_size, subject)


def student_tokens(
    student_dir: str,
    teacher_dir: str,
    subject: str,
    fmri_path: str,
    latent_path: str,
    captions: dict[tuple[str, int], str],
    captions_path: str,
    device: torch.device,
) -> tuple[FmriStudent, torch.Tensor, list[tuple[str, int]]]:
    """The trained student on ``device``, and its tokens for ``subject``'s test samples (each must have a
    reference)."""
    student = load_student(student_dir, teacher_dir, device)
    inputs, keys = student_inputs(student.input_kind, [fmri_path], [latent_path], "test", student.window)
    missing = sorted({k for k in keys if k not in captions})
    if missing:
        raise ValueError(f"{captions_path}: no reference caption for test samples {missing[:5]}")
    return student, torch.cat(list(encoded(student.encoder, inputs, device, subject))), keys


def write_decoded(
    out_path: str | Path,
    subject: str,
    heldout: bool,
    keys: list[tuple[str, int]],
    decoded: dict[str, list[str]],
    captions: dict[tuple[str, int], str],
    evaluate: EvaluateConfig,
    fmri_path: str,
) -> None:
    """``/segment, /tr, /source, /caption, /reference``: one row per test sample × source; the attrs say
    what chose the fMRI's voxels (``voxel_selection``), so that test-selected voxels show in the metrics."""
    with h5py.File(fmri_path, "r") as fmri:
        selection = str(fmri.attrs.get("voxel_selection", "unknown"))
    with atomic_h5(out_path, "eval", evaluate.to_dict()) as f:
        rows = [(key, source, text) for source, texts in decoded.items() for key, text in zip(keys, texts, strict=True)]
        write_keys(f, [r[0][0] for r in rows], [r[0][1] for r in rows])
        write_strings(f, "source", [r[1] for r in rows])
        write_strings(f, "caption", [r[2] for r in rows])
        write_strings(f, "reference", [captions[r[0]] for r in rows])
        set_attrs(f, {"subject": subject, "heldout": heldout, "sources": list(decoded), "voxel_selection": selection})


def nearest_train_pool(
    *,
    subjects: list[str],
    fmri_paths: list[str],
    latent_paths: list[str],
    teacher_dir: str,
    student_dir: str,
    out_path: str | Path,
    device: str,
    seed: int,
) -> None:
    """The labelled subjects' training samples as the nearest-train source compares them: the student's
    pooled tokens (:func:`pooled`) and each sample's key. Every decoding job of a replicate retrieves from the
    same pool, so it is encoded once here instead of once per decoded subject (which grew with the square of
    the subjects, and put every labelled subject's fMRI among each decoding job's inputs). The student is
    loaded without its LLM (:func:`~llm4brain.instruct.student.load_student_encoder`).

    Args:
        subjects: the labelled subjects, whose input layers read their windows (``align.subject_kernel``).
        fmri_paths: their fMRI, as the aligner read it (one file per subject), in the same order.
        latent_paths: their aligned tokens (``align/{subject}.h5``), in the same order.
        teacher_dir: the video LLM the student was distilled from.
        student_dir: the trained student (``instruct/model``).
        out_path: the pool artifact (``eval/nearest_train/pool.h5``): ``/segment``, ``/tr``, ``/pooled``.
        device: ``evaluate.device`` (``auto``: CUDA when present).
        seed: the replicate's seed.
    """
    seed_everything(seed + SeedOffset.DECODE, 1)
    on = select_device(device)
    encoder = load_student_encoder(student_dir, teacher_dir, on)  # the student without its LLM
    pool, keys = [], []  # only each training sample's pooled tokens are held: (H,), not (Q, H)
    for subject, fmri, latents in zip(subjects, fmri_paths, latent_paths, strict=True):
        inputs, split_keys = student_inputs(encoder.input_kind, [fmri], [latents], "train", encoder.window)
        pool += [pooled(tokens) for tokens in encoded(encoder, inputs, on, subject)]
        keys += split_keys
    with atomic_h5(out_path, "pool", {"device": device}) as f:
        write_keys(f, [key[0] for key in keys], [key[1] for key in keys])
        f.create_dataset("pooled", data=torch.cat(pool).float().cpu().numpy())
        set_attrs(f, {"subjects": list(subjects)})


def read_pool(path: str) -> tuple[torch.Tensor, list[tuple[str, int]]]:
    """A :func:`nearest_train_pool` artifact: the pooled tokens (n, H) and their ``(segment, tr)`` keys."""
    with open_artifact(path, "pool", required=("segment", "tr", "pooled")) as f:
        return torch.from_numpy(f["pooled"][:]), read_keys(f)


def decode_captions(
    *,
    subject: str,
    fmri_path: str,
    latent_path: str,
    captions_path: str,
    teacher_dir: str,
    student_dir: str,
    out_path: str | Path,
    heldout: list[str],
    evaluate: EvaluateConfig,
    seed: int,
    ablation: str | None = None,
    pool_path: str | None = None,
    feature_paths: Sequence[str] = (),
) -> None:
    """Write ``/segment, /tr, /source, /caption, /reference`` for every test sample × source (rule
    ``decode_captions``), or, for a student of the ``ablation`` run (rule ``decode_ablation``), its fMRI
    source alone, ``fmri-{ablation}``.

    Args:
        subject: whose test fMRI is decoded.
        fmri_path: its preprocessed fMRI (the student's input when trained end to end).
        latent_path: its aligned tokens (the input of a student trained on latents).
        captions_path: the reference captions of every clip.
        teacher_dir: the video LLM the student was distilled from (the ``video-teacher`` source).
        student_dir: the trained student (``instruct/model``, or the ablation's).
        out_path: the decoded captions' artifact.
        heldout: the held-out subjects (recorded: is this one of them).
        evaluate: the ``evaluate`` section (decoding settings, device, the shuffle's seed).
        seed: the replicate's seed.
        ablation: the ablation run whose student decodes; None: the full student, with every source.
        pool_path: the nearest-train pool (:func:`nearest_train_pool`); needed unless ``ablation``.
        feature_paths: the test segments' vision features (the teacher's input); needed unless ``ablation``.
    """
    if ablation is None and (pool_path is None or not feature_paths):
        raise ValueError("decode_captions: the full student's sources need the nearest-train pool and the features")
    seed_everything(seed + SeedOffset.DECODE, 1)
    captions = read_captions(captions_path)
    device = select_device(evaluate.device)
    student, tokens, keys = student_tokens(
        student_dir, teacher_dir, subject, fmri_path, latent_path, captions, captions_path, device
    )
    if ablation is not None:
        decoded = {f"fmri-{ablation}": generate_captions(student.captioner, tokens, evaluate)}
        write_decoded(out_path, subject, subject in heldout, keys, decoded, captions, evaluate, fmri_path)
        return
    qformer, teacher, _ = load_teacher(teacher_dir, device)
    pool_tokens, pool_keys = read_pool(str(pool_path))
    pool_tokens = pool_tokens.to(tokens.device, tokens.dtype)  # stored as float32: exact for half precisions
    permutation = torch.from_numpy(np.random.default_rng(evaluate.shuffle_seed).permutation(len(keys)))

    decoded = {
        "fmri": generate_captions(student.captioner, tokens, evaluate),
        "video-teacher": generate_captions(
            teacher, encode_clips(qformer, FeatureFiles(list(feature_paths)), keys), evaluate
        ),
        "shuffled": generate_captions(student.captioner, tokens[permutation], evaluate),
        "nearest-train": nearest_captions(tokens, pool_tokens, pool_keys, captions),
    }
    write_decoded(out_path, subject, subject in heldout, keys, decoded, captions, evaluate, fmri_path)
    for i in range(min(3, len(keys))):
        LOG.info(
            "%s %s: fmri %r | teacher %r | reference %r",
            subject,
            keys[i],
            decoded["fmri"][i],
            decoded["video-teacher"][i],
            captions[keys[i]],
        )
