"""The align stage (rule ``pretrain_adaptor``, config ``align``, output ``align/``): train the brain aligner,
then write every subject's latents and retrieval metrics (:func:`train_brain_aligner`).

Labelled subjects contribute (fMRI, clip) pairs; held-out subjects contribute only their unlabelled
training-split fMRI, through the domain-adaptation term. fMRI windows stream from the subjects' files
(:mod:`llm4brain.fmri.stream`) and the cached video tokens are read a batch of clips at a time: memory does
not grow with the number of clips.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from llm4brain.align.adversarial import heldout_subjects
from llm4brain.align.model import BrainAligner, save_aligner
from llm4brain.align.objective import (
    AlignmentObjective,
    alignment_losses,
    build_trainables,
    uses_heldout_fmri,
)
from llm4brain.artifacts import (
    FeatureFiles,
    atomic_h5,
    check_coverage,
    open_artifact,
    read_keys,
    set_attrs,
    write_keys,
)
from llm4brain.distributed import world
from llm4brain.fmri.stream import (
    BoldSplit,
    ShuffledStream,
    clip_stream,
    iter_windows,
    open_splits,
    row_stream,
)
from llm4brain.models.video_llm import encode_clips, load_video_qformer
from llm4brain.ranking import topk_accuracy, topk_hits
from llm4brain.resume import Checkpoint
from llm4brain.runtime import LOG
from llm4brain.sections import AlignConfig, EncoderConfig, TrainConfig
from llm4brain.seeds import SeedOffset
from llm4brain.training import begin_stage, fit, model_folder, validation_clips

if TYPE_CHECKING:
    from llm4brain.models.instructblip_video import InstructionQFormer
    from llm4brain.models.video_llm import VideoQFormer

SPLITS = ("train", "test")


def identification(
    brain: torch.Tensor,
    video: torch.Tensor,
    targets: np.ndarray,
    n_way: int | None = None,
    ks: tuple[int, ...] = (1, 5),
    trials: int = 100,
    seed: int = 0,
) -> dict[str, float]:
    """n-way clip identification: is row i's own clip among the k most similar of n candidate clips?

    ``n_way`` None uses all clips as candidates; otherwise (MinD-Vis' protocol) each row's own clip and
    ``n_way - 1`` random others, drawn ``trials`` times (seeded), and the hit rates are averaged. Ties are
    broken at random, in expectation (:mod:`llm4brain.ranking`).
    """
    normalize = torch.nn.functional.normalize
    sim = (normalize(brain.mean(1), dim=-1) @ normalize(video.mean(1), dim=-1).T).detach().float().cpu().numpy()
    n_clips = video.shape[0]
    n = n_clips if n_way is None or n_way >= n_clips else n_way
    if n == n_clips:
        return topk_accuracy(sim, targets, ks)
    rng = np.random.default_rng(seed)
    others = [np.delete(np.arange(n_clips), t) for t in targets]
    picks = np.stack([[rng.choice(o, n - 1, replace=False) for o in others] for _ in range(trials)])
    candidates = sim[np.arange(len(targets))[None, :, None], picks]  # (trials, rows, n - 1)
    out: dict[str, float] = {"n_way": n}
    for k in ks:
        out[f"top{k}"] = float(topk_hits(candidates, sim[np.arange(len(targets)), targets][None, :], k).mean())
        out[f"chance_top{k}"] = min(k, n) / n
    return out


def encode_targets(
    qformer: VideoQFormer | InstructionQFormer,
    features: FeatureFiles,
    keys: list[tuple[str, int]],
    batch_size: int = 128,
) -> torch.Tensor:
    """The video tokens (n, Q, H) of each ``(segment, tr)`` clip in ``keys``, on the CPU in float32, encoded
    one segment after another (``batch_size`` clips of one file at a time)."""
    order = sorted(range(len(keys)), key=keys.__getitem__)
    parts = [
        encode_clips(qformer, features, [keys[i] for i in order if keys[i][0] == segment], batch_size)
        for segment in dict.fromkeys(keys[i][0] for i in order)
    ]
    return torch.cat(parts)[torch.from_numpy(np.argsort(order))]


def split_keys(path: str, split: str) -> list[tuple[str, int]]:
    with open_artifact(path, "fmri", (f"{split}/segment", f"{split}/tr")) as f:
        return read_keys(f[split])


@dataclass
class AlignmentData:
    """The training split as the aligner reads it: each subject's open file and keys (both splits), the
    labelled subjects' rows of each clip, and the clips they all watched, some held back to validate on."""

    files: dict[str, BoldSplit]
    keys: dict[tuple[str, str], list[tuple[str, int]]]
    labelled: list[str]
    heldout: list[str]  # sorted
    rows_of: dict[str, dict[tuple[str, int], list[int]]]
    clips: list[tuple[str, int]]
    val_clips: list[tuple[str, int]]


def alignment_data(
    fmri_paths: Sequence[str],
    features: FeatureFiles,
    subjects: list[str],
    heldout: set[str],
    val_fraction: float,
    generator: torch.Generator,
) -> AlignmentData:
    """Open every subject's training split, check its clips against the stimulus features, and draw the whole
    clips validated on (with ``generator``, for every labelled subject alike)."""
    files = dict(zip(subjects, open_splits(list(fmri_paths), "train"), strict=True))
    keys = {}
    for s, path in zip(subjects, fmri_paths, strict=True):
        for split in SPLITS:
            keys[s, split] = split_keys(path, split)
            check_coverage(features.n_tr, keys[s, split], path)
    labelled = [s for s in subjects if s not in heldout]
    rows_of: dict[str, dict[tuple[str, int], list[int]]] = {s: defaultdict(list) for s in labelled}
    for s in labelled:
        for i, key in enumerate(keys[s, "train"]):
            rows_of[s][key].append(i)
    clips = sorted(set.intersection(*(set(rows_of[s]) for s in labelled)))
    if not clips:  # each step pairs a clip's windows from every labelled subject
        raise ValueError(
            f"align: the labelled subjects {labelled} share no training clip ({', '.join(map(str, fmri_paths))}); "
            "hold out the subjects that watched other training segments (data.segments.subject_train)"
        )
    held = validation_clips(clips, val_fraction, generator)  # whole clips, for every labelled subject
    val_clips, clips = sorted(held), [clip for clip in clips if clip not in held]
    LOG.info(
        "aligning %d labelled subjects on %d clips (%d more to validate on); held out (unlabelled): %s",
        *(len(labelled), len(clips), len(val_clips), sorted(heldout) or "none"),
    )
    return AlignmentData(files, keys, labelled, sorted(heldout), rows_of, clips, val_clips)


def training_streams(
    data: AlignmentData, window: int, train_params: TrainConfig, seed: int, uses_heldout: bool
) -> list[ShuffledStream]:
    """The labelled (fMRI, clip) stream, and the held-out subjects' unlabelled one when a step reads it; the
    two share ``train.buffer_mb``."""
    shard = world()
    buffer_mb = train_params.buffer_mb / (2 if uses_heldout else 1)
    shared = {"rank": shard.rank, "world_size": shard.size, "workers": train_params.loader_workers}
    streams = [
        clip_stream(
            [data.files[s] for s in data.labelled],
            [[np.array(data.rows_of[s][c]) for c in data.clips] for s in data.labelled],
            window,
            buffer_mb,
            seed + SeedOffset.ALIGN_CLIPS,
            **shared,
        )
    ]
    if uses_heldout:
        files = [data.files[s] for s in data.heldout]
        rows = [np.arange(f.n_rows) for f in files]
        streams.append(row_stream(files, rows, window, buffer_mb, seed + SeedOffset.ALIGN_HELDOUT, **shared))
    return streams


def clip_validation(
    objective: AlignmentObjective, data: AlignmentData, targets: torch.Tensor, window: int, batch_size: int
) -> Callable[[], float]:
    """The labelled terms on the validation clips (first repeat of each), in eval mode."""
    model = objective.trainables.aligner
    rows = [np.array([data.rows_of[s][clip][0] for clip in data.val_clips]) for s in data.labelled]
    pick = torch.arange(len(data.val_clips), device=targets.device)

    def validate() -> float:
        model.eval()
        brain = torch.cat(
            [
                model(batch.to(targets.device), model.subject_index(s, len(batch)))
                for s, subject_rows in zip(data.labelled, rows, strict=True)
                for batch in iter_windows(data.files[s], subject_rows, window, batch_size)
            ]
        )
        terms, _ = alignment_losses(brain, model.logit_scale, len(data.labelled), pick, targets)
        return float(objective.weighted(terms))

    return validate


def train_brain_aligner(
    *,
    fmri_paths: Sequence[str],
    feature_paths: Sequence[str],
    teacher_dir: str,
    model_dir: str,
    latent_paths: Sequence[str],
    metrics_path: str,
    subjects: list[str],
    encoder: EncoderConfig,
    align: AlignConfig,
    seed: int,
    pretrained: str | None = None,
    checkpoint: Checkpoint | None = None,
) -> None:
    """Train on labelled subjects (+ unlabelled held-out fMRI) and write model, latents and metrics.

    Training reads only the ``train`` split (:func:`alignment_data`, :func:`fit_aligner`).

    Args:
        fmri_paths: every subject's preprocessed fMRI (``results/fmri/{subject}.h5``), in ``subjects``' order.
        feature_paths: the segments' cached vision features.
        teacher_dir: the trained video LLM whose Q-Former's tokens the aligner learns to produce.
        model_dir: where the aligner and its train log go.
        latent_paths: each subject's aligned tokens for both splits, in ``subjects``' order.
        metrics_path: test-split identification of the latents against the video tokens.
        subjects: every subject; ``align.heldout`` names those whose labels are never used.
        encoder: the ``encoder`` section.
        align: the ``align`` section.
        seed: the replicate's seed (each random stream adds its own offset).
        pretrained: an encoder to start from (pretrain_scmbm's, or a MinD-Vis checkpoint).
        checkpoint: where a killed run resumes from.
    """
    train_params, window = align.train, encoder.window
    device = begin_stage(train_params, seed + SeedOffset.ALIGN)
    qformer = load_video_qformer(teacher_dir).to(device)  # the teacher's LLM is not needed here
    features, heldout = FeatureFiles(feature_paths), set(align.heldout)
    generator = torch.Generator().manual_seed(seed + SeedOffset.ALIGN_BATCHES)
    data = alignment_data(fmri_paths, features, subjects, heldout, train_params.val_fraction, generator)
    aligner, history = fit_aligner(
        data=data,
        qformer=qformer,
        features=features,
        encoder=encoder,
        align=align,
        seed=seed,
        generator=generator,
        pretrained=pretrained,
        checkpoint=checkpoint,
    )
    if not world().main:
        return
    with model_folder(model_dir, history) as tmp_model:
        save_aligner(tmp_model, aligner, teacher_dir)
        metrics = write_latents(
            model=aligner,
            qformer=qformer,
            features=features,
            fmri_paths=fmri_paths,
            keys=data.keys,
            subjects=subjects,
            heldout=heldout,
            latent_paths=latent_paths,
            align=align,
            window=window,
            seed=seed,
        )
        metrics.to_csv(metrics_path, sep="\t", index=False, float_format="%.4f")
    LOG.info("identification:\n%s", metrics.to_string(index=False))


def fit_aligner(
    *,
    data: AlignmentData,
    qformer: VideoQFormer | InstructionQFormer,
    features: FeatureFiles,
    encoder: EncoderConfig,
    align: AlignConfig,
    seed: int,
    generator: torch.Generator,
    pretrained: str | None,
    checkpoint: Checkpoint | None,
) -> tuple[BrainAligner, pd.DataFrame]:
    """The aligner trained on ``data`` (``align``: the ``align`` section), and its train log. Each step takes
    ``batch_size`` clips (each clip's window from every labelled subject, a seeded random repeat) and as many
    held-out windows, from streams that share ``train.buffer_mb``."""
    train_params, window, batch_size = align.train, encoder.window, align.train.batch_size
    device = next(qformer.parameters()).device
    targets = encode_targets(qformer, features, data.clips).to(device)  # (n_clips, Q, H)
    uses_heldout = uses_heldout_fmri(align, data.heldout)
    trainables = build_trainables(
        grid=data.files[data.labelled[0]].shape,
        encoder=encoder,
        align=align,
        qformer=qformer,
        token_width=targets.shape[-1],
        subjects=data.labelled + data.heldout,
        uses_heldout=uses_heldout,
        device=device,
        pretrained=pretrained,
    )
    streams = training_streams(data, window, train_params, seed, uses_heldout)
    objective = AlignmentObjective(trainables, align, len(data.labelled), train_params.steps, generator, world())
    val_targets = encode_targets(qformer, features, data.val_clips).to(device) if data.val_clips else None
    history = fit(
        trainables.modules(),
        step_loss(objective, streams, data, targets, batch_size),
        train_params,
        "pretrain_adaptor",
        checkpoint=checkpoint,
        generators=[generator],
        validate=clip_validation(objective, data, val_targets, window, batch_size) if val_targets is not None else None,
        device=device,
        stateful=streams,
    )
    return trainables.aligner, history


def step_loss(
    objective: AlignmentObjective,
    streams: list[ShuffledStream],
    data: AlignmentData,
    targets: torch.Tensor,
    batch_size: int,
) -> Callable[[int], tuple[torch.Tensor, dict[str, float]]]:
    """``fit``'s loss function: a batch of clips from the labelled stream (and, when the objective reads them,
    of windows from the held-out one) through the objective."""
    device, n_rows = targets.device, [data.files[s].n_rows for s in data.heldout]

    def heldout_batch() -> tuple[torch.Tensor, torch.Tensor]:
        units, windows = streams[1].next(batch_size)
        return windows[:, 0].to(device), heldout_subjects(units, n_rows, len(data.labelled)).to(device)

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        pick, windows = streams[0].next(batch_size)  # (B,), (B, S, W, ...)
        inputs = windows.transpose(0, 1).flatten(0, 1).to(device)  # subject by subject
        pick = pick.to(device)
        return objective(step, pick, inputs, targets[pick], heldout_batch if len(streams) > 1 else None)

    return loss_fn


def write_latents(
    *,
    model: BrainAligner,
    qformer: VideoQFormer | InstructionQFormer,
    features: FeatureFiles,
    fmri_paths: Sequence[str],
    keys: dict[tuple[str, str], list[tuple[str, int]]],
    subjects: list[str],
    heldout: set[str],
    latent_paths: Sequence[str],
    align: AlignConfig,
    window: int,
    seed: int,
    batch_size: int = 128,
) -> pd.DataFrame:
    """``/{split}/tokens`` for every subject, encoded ``batch_size`` windows at a time, and test-split
    identification against the video tokens (50-way, as MinD-Vis reports, and among all test clips)."""
    rows = []
    videos: dict[tuple, torch.Tensor] = {}  # subjects share their test clips: encode each set once
    for subject, fmri_path, path in zip(subjects, fmri_paths, latent_paths, strict=True):
        with atomic_h5(path, "align", align.to_dict()) as f:
            for split in SPLITS:
                bold, split_keys_ = BoldSplit(fmri_path, split), keys[subject, split]
                group, kept, written = f.create_group(split), [], 0
                for batch in iter_windows(bold, np.arange(bold.n_rows), window, batch_size):
                    tokens = model.encode(batch, subject, batch_size)
                    if not written:
                        out = group.create_dataset("tokens", (bold.n_rows, *tokens.shape[1:]), np.float16)
                    out[written : written + len(tokens)] = tokens.numpy().astype(np.float16)
                    written += len(tokens)
                    if split == "test":
                        kept.append(tokens)
                write_keys(group, [k[0] for k in split_keys_], [k[1] for k in split_keys_])
                if split == "test":
                    candidates = tuple(sorted(set(split_keys_)))
                    index = {k: i for i, k in enumerate(candidates)}
                    if candidates not in videos:
                        videos[candidates] = encode_targets(qformer, features, list(candidates))
                    targets = np.array([index[k] for k in split_keys_])
                    for n_way in (50, None):
                        scores = identification(torch.cat(kept), videos[candidates], targets, n_way, seed=seed)
                        rows.append({"subject": subject, "heldout": subject in heldout, "split": split, **scores})
                    set_attrs(group, scores)  # among all test clips
            set_attrs(f, {"subject": subject, "heldout": subject in heldout})
    return pd.DataFrame(rows).drop_duplicates(["subject", "n_way"])
