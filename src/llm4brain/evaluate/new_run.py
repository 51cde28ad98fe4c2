"""Decode one new fMRI run with a trained pipeline: preprocess it exactly like training, caption each TR.

The preprocessing settings, the kept voxels and the TR come from the subject's preprocessed fMRI artifact,
so a run is cleaned the way that subject's training runs were. The student is one replicate's
(``results/r{seed}/``); its fMRI artifact is the replicate's own (the demo draws its data per seed) or the
shared ``results/fmri``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from llm4brain import layout
from llm4brain.align.windows import windows
from llm4brain.artifacts import ArtifactError, open_artifact
from llm4brain.fmri.functional_alignment import Carry
from llm4brain.fmri.images import SurfaceSpace, VolumeSpace, space_from_artifact
from llm4brain.fmri.preprocess import plan_run, read_clean_run
from llm4brain.fmri.runs import check_id, read_run
from llm4brain.instruct.student import load_student
from llm4brain.models.captioner import generate_captions
from llm4brain.runtime import select_device
from llm4brain.sections import EvaluateConfig, FmriConfig


def replicate_dir(results: Path, replicate: int | None) -> Path:
    """The replicate folder (``results/r{seed}``) whose student decodes: the one named, or the only one."""
    if replicate is not None:
        run = layout.replicate_dir(results, replicate)
        if not (run / layout.STUDENT).is_dir():
            raise ArtifactError(f"{run}: replicate {replicate} has no trained student ({layout.STUDENT})")
        return run
    runs = sorted(path.parent.parent for path in results.glob(f"{layout.replicate_name('*')}/{layout.STUDENT}"))
    if not runs:
        raise ArtifactError(f"{results}: no trained student in r{{seed}}/{layout.STUDENT}; run the workflow first")
    if len(runs) != 1:
        found = ", ".join(run.name for run in runs) or "none"
        raise ArtifactError(
            f"{results}: choose the replicate whose student decodes with --replicate SEED "
            f"(trained students in r{{seed}}/{layout.STUDENT}: {found})"
        )
    return runs[0]


def subject_preprocessing(
    results: Path, subject: str, replicate: int | None = None
) -> tuple[VolumeSpace | SurfaceSpace, np.ndarray, FmriConfig, float]:
    """The space and usable voxels, the fMRI params and the TR used for ``subject`` in training."""
    own = replicate_dir(results, replicate) / layout.FMRI.format(subject=subject)
    path = own if own.exists() else results / layout.FMRI.format(subject=subject)
    if not path.exists():
        raise ArtifactError(
            f"{path}: subject {subject!r} was never preprocessed with this pipeline. Add it to data.subjects "
            f"(and to align.heldout to adapt without labels), then run `snakemake --until pretrain_adaptor` "
            f"and `snakemake` so the encoder is adapted to it before decoding."
        )
    with open_artifact(path, "fmri", ("mask",)) as f:
        if "params" not in f.attrs:
            raise ArtifactError(f"{path}: records no preprocessing params (older llm4brain); rerun preprocess_fmri")
        return (
            *space_from_artifact(f),
            FmriConfig.from_dict(json.loads(f.attrs["params"]), source=path),
            float(f.attrs["tr"]),
        )


def preprocess_new_run(
    subject: str, bold: str | Path, events: str | Path, results: str | Path, window: int, replicate: int | None = None
) -> tuple[np.ndarray, str, np.ndarray, float]:
    """A run's encoder inputs, cleaned as ``subject``'s training runs were: ``(n, window, *sample)`` float32
    windows of the volumes paired to the whole TRs of its stimulus, the stimulus' segment, those TRs, and
    the TR in seconds. Separate from decoding so that a test can hold it against ``results/fmri``.

    Args:
        subject: a subject the workflow preprocessed (``data.subjects``); its artifact gives the cleaning
            params, the kept voxels, the space and the TR the run is read with.
        bold: the run's 4-D BOLD image: a NIfTI on the grid and affine of the subject's training runs, or a
            CIFTI ``*.dtseries.nii`` when those were CIFTI; its header TR must be the subject's.
        events: the run's BIDS events TSV: one row, with ``onset`` and ``duration`` in seconds and a
            ``segment`` (or ``stim_file``) column naming the stimulus shown.
        results: the workflow's results folder, holding ``fmri/{subject}.h5`` (or ``r{seed}/fmri/`` in the
            demo) and the replicates' trained models.
        window: consecutive TR volumes per encoder sample (the student's ``encoder.window``).
        replicate: the seed of the replicate whose artifacts are read (``results/r{seed}/``); None when
            ``results`` holds one trained student.

    Returns:
        samples: ``(n, window, *sample)`` float32 windows, ``sample`` being the artifact's ``(X, Y, Z)`` grid
            or its ``(V,)`` grayordinates, one per paired TR.
        segment: the stimulus segment the run showed.
        trs: the ``n`` whole TRs of the stimulus (clip indices) the windows are paired with.
        tr: the repetition time in seconds.

    Raises:
        ArtifactError: the subject was never preprocessed, no trained student is found for ``replicate``, or
            ``replicate`` is None while several replicates have one.
        InputError: a malformed subject id or events table, or a run whose TR, grid or length does not fit
            the subject's training runs.
    """
    check_id(subject, "subject id")
    space, usable, params, tr = subject_preprocessing(Path(results), subject, replicate)
    run = read_run(Path(bold), Path(events))
    kept, pairs = plan_run(space, run, tr, params)
    series, ok, _ = read_clean_run(space, run, kept, tr, params)
    # the paired volumes' rows, windowed as the artifact's rows are: the last clip's window repeats it rather
    # than reach the run's next (unpaired) volume, which the student never saw in training
    rows = space.samples(series[[volume for _, volume in pairs]], usable & ok)
    carry = heldout_carry(replicate_dir(Path(results), replicate), subject)
    if carry is not None:  # a held-out subject its aligner read in the labelled subjects' space
        rows = carry(rows)
    trs = [k for k, _ in pairs]
    return windows(rows, [(run.segment, k) for k in trs], window), run.segment, np.array(trs), tr


def heldout_carry(run: Path, subject: str) -> Carry | None:
    """The functional alignment that carried ``subject``'s fMRI into the labelled subjects' space for the
    replicate's aligner (``align.functional_alignment``: a held-out subject, or every subject with ``carry:
    all``), or None when it read the subject's own."""
    align = json.loads((run / layout.ALIGNER / "config.json").read_text())["align"]
    functional = align.get("functional_alignment", {})
    carried = subject in align["heldout"] or functional.get("carry", "heldout") == "all"
    if not carried or functional.get("method", "none") == "none":
        return None
    return Carry.load(run / layout.ALIGNED_FMRI.format(subject=subject))


def decode_run(
    subject: str,
    bold: str | Path,
    events: str | Path,
    results: str | Path,
    *,
    replicate: int | None = None,
    max_new_tokens: int = 24,
    num_beams: int = 1,
    batch_size: int = 64,
) -> pd.DataFrame:
    """One caption per whole TR of the stimulus shown in the run: ``segment, tr, start, end, caption``, by
    the student of replicate ``replicate`` (its seed; None = the only one in ``results``).

    Args:
        subject: a subject the workflow preprocessed and trained or adapted on (``data.subjects``), whose
            cleaning, kept voxels and TR the run is read with.
        bold: the run's 4-D BOLD image: a NIfTI on the grid and affine of the subject's training runs, or a
            CIFTI ``*.dtseries.nii`` when those were CIFTI; its header TR must be the subject's.
        events: the run's BIDS events TSV: one row, with ``onset`` and ``duration`` in seconds and a
            ``segment`` (or ``stim_file``) column naming the stimulus shown.
        results: the workflow's results folder, holding ``fmri/{subject}.h5`` and each replicate's student
            (``r{seed}/instruct/model``).
        replicate: the seed of the replicate whose student decodes; None when ``results`` holds exactly one.
        max_new_tokens: the longest caption generated, in tokens.
        num_beams: beam search width; 1 decodes greedily.
        batch_size: TRs captioned per ``generate`` call: memory, not the captions.

    Returns:
        One row per whole TR of the stimulus paired with a volume: ``segment``, ``tr`` (the clip's index in
            the stimulus), ``start`` and ``end`` in seconds from the stimulus' first frame (clip ``tr`` spans
            ``[tr·TR, (tr+1)·TR)``) and ``caption``.

    Raises:
        ArtifactError: the subject was never preprocessed, no trained student is found for ``replicate``, or
            ``replicate`` is None while several replicates have one.
        InputError: a malformed subject id or events table, or a run whose TR, grid or length does not fit
            the subject's training runs.
        ValueError: the student was trained on frozen latents (``instruct.input: latents``), which a new run
            cannot give.
    """
    check_id(subject, "subject id")
    results = Path(results)
    subject_preprocessing(results, subject, replicate)  # a subject never preprocessed is named before any model loads
    student_dir = replicate_dir(results, replicate) / layout.STUDENT
    config = json.loads((student_dir / "config.json").read_text())
    teacher = Path(config["teacher"])  # as the workflow named it, relative to its working directory
    student = load_student(student_dir, teacher if teacher.is_absolute() else results.parent / teacher, select_device())
    if student.input_kind != "encoder":
        raise ValueError(
            f"{student_dir}: trained on frozen latents; decoding a new run needs `instruct.input: encoder`"
        )
    samples, segment, k, tr = preprocess_new_run(subject, bold, events, results, student.window, replicate)
    tokens = student.encode(torch.from_numpy(samples), subject=subject)
    settings = EvaluateConfig(
        batch_size=batch_size, max_new_tokens=max_new_tokens, num_beams=num_beams, repetition_penalty=1.0
    )
    captions = generate_captions(student.captioner, tokens, settings)
    return pd.DataFrame({"segment": segment, "tr": k, "start": k * tr, "end": (k + 1) * tr, "caption": captions})


def srt_time(seconds: float) -> str:
    """SubRip timestamp ``HH:MM:SS,mmm``."""
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def write_srt(table: pd.DataFrame, path: str | Path) -> None:
    """One numbered subtitle per TR, timed to the stimulus.

    Args:
        table: captions as :func:`decode_run` returns them (columns ``start`` and ``end`` in seconds, and
            ``caption``), one subtitle per row in row order.
        path: the SubRip (``.srt``) file to write; an existing one is replaced.
    """
    blocks = [
        f"{i}\n{srt_time(row.start)} --> {srt_time(row.end)}\n{row.caption}\n"
        for i, row in enumerate(table.itertuples(), start=1)
    ]
    Path(path).write_text("\n".join(blocks))
