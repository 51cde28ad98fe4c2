"""``pretrain_adaptor``: train the brain aligner, then write every subject's latents and retrieval metrics.

Labelled subjects contribute (fMRI, clip) pairs; held-out subjects contribute only their unlabelled
training-split fMRI, through the domain-adaptation term. fMRI windows stream from the subjects' files
(:mod:`llm4brain.fmri.stream`) and the cached video tokens are read a batch of clips at a time: memory does
not grow with the number of clips.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from llm4brain.align.adversarial import SubjectAdversary, dann_coefficient, heldout_subjects
from llm4brain.align.losses import coral, cross_subject, info_nce, mmd
from llm4brain.align.model import BrainAligner, save_aligner
from llm4brain.align.terms import ADAPTATION_TERMS
from llm4brain.artifacts import (
    ArtifactError,
    atomic_h5,
    atomic_path,
    check_coverage,
    open_artifact,
    read_keys,
    set_attrs,
    write_keys,
)
from llm4brain.distributed import World, gather, world
from llm4brain.fmri.stream import (
    BoldSplit,
    clip_stream,
    iter_windows,
    open_splits,
    row_stream,
)
from llm4brain.models.mbm import MaskedBrainModel
from llm4brain.models.video_llm import load_video_qformer
from llm4brain.ranking import topk_accuracy, topk_hits
from llm4brain.resume import Checkpoint
from llm4brain.runtime import LOG, seed_everything, select_device
from llm4brain.seeds import SeedOffset
from llm4brain.training import fit

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


def feature_files(paths: Sequence[str]) -> dict[str, tuple[str, int]]:
    """``segment → (features file, n_tr)``, checking every file's tokens are (n_tr, F, T, D) of one shape;
    the tokens stay on disk."""
    index, shape = {}, None
    for path in paths:
        with open_artifact(path, "features", ("tokens", "tr")) as f:
            tokens, segment = f["tokens"], str(f.attrs["segment"])
            if tokens.ndim != 4:
                raise ArtifactError(f"{path}: tokens must be (n_tr, F, T, D), got {tokens.shape}")
            if shape is not None and tokens.shape[1:] != shape:
                raise ArtifactError(f"{path}: tokens {tokens.shape[1:]} per clip differ from other segments' {shape}")
            shape, index[segment] = tokens.shape[1:], (str(path), len(tokens))
    return index


def encode_targets(
    qformer: torch.nn.Module, features: dict[str, tuple[str, int]], keys: list[tuple[str, int]], batch_size: int = 128
) -> torch.Tensor:
    """The video tokens (n, Q, H) of each ``(segment, tr)`` clip in ``keys``, on the CPU in float32: cached
    vision tokens are read ``batch_size`` clips at a time, one segment's file after another."""
    device = next(qformer.parameters()).device
    order = sorted(range(len(keys)), key=keys.__getitem__)
    parts = []
    with torch.no_grad():
        for segment in dict.fromkeys(keys[i][0] for i in order):
            mine = [i for i in order if keys[i][0] == segment]
            with open_artifact(features[segment][0], "features", ("tokens",)) as f:
                for start in range(0, len(mine), batch_size):
                    trs, inverse = np.unique(
                        [keys[i][1] for i in mine[start : start + batch_size]], return_inverse=True
                    )
                    clips = f["tokens"][trs][inverse].astype(np.float32)
                    parts.append(qformer(torch.from_numpy(clips).to(device)).float().cpu())
    return torch.cat(parts)[torch.from_numpy(np.argsort(order))]


def split_keys(path: str, split: str) -> list[tuple[str, int]]:
    with open_artifact(path, "fmri", (f"{split}/segment", f"{split}/tr")) as f:
        return read_keys(f[split])


def alignment_terms(
    model: BrainAligner,
    n_subjects: int,
    pick: torch.Tensor,
    inputs: torch.Tensor,
    video: torch.Tensor,
    shard: World = World(),
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The labelled loss terms for clips ``pick`` seen by each of ``n_subjects`` (``inputs`` stacked subject
    by subject), and the pooled brain tokens of the global batch."""
    return alignment_losses(model(inputs), model.logit_scale, n_subjects, pick, video, shard)


def alignment_losses(
    brain: torch.Tensor,
    logit_scale: torch.Tensor,
    n_subjects: int,
    pick: torch.Tensor,
    video: torch.Tensor,
    shard: World = World(),
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """:func:`alignment_terms` of brain tokens (S·B, Q, H) computed already. When they are ``shard``'s share
    of a data-parallel batch, the token MSE (a per-sample mean) stays local and the batch-coupled terms see
    the batch gathered from every process (:mod:`llm4brain.distributed`)."""
    token_mse = ((brain - video.repeat(n_subjects, 1, 1)) ** 2).mean()
    pooled = brain.mean(1).view(n_subjects, len(pick), -1)  # (S, B, H)
    clips = video.mean(1)
    if shard.size > 1:
        pooled = gather(pooled.transpose(0, 1)).transpose(0, 1)
        pick, clips = gather(pick), gather(clips)
    same = pick[None, :] == pick[:, None]
    flat = pooled.flatten(0, 1)
    return {
        "contrastive": info_nce(flat, clips, same.repeat(n_subjects, 1), logit_scale),
        "token_mse": token_mse,
        "cross_subject": cross_subject(pooled),
    }, flat


def pretrain_adaptor(
    *,
    fmri_paths: Sequence[str],
    feature_paths: Sequence[str],
    teacher_dir: str,
    model_dir: str,
    latent_paths: Sequence[str],
    metrics_path: str,
    subjects: list[str],
    encoder_params: dict[str, Any],
    params: dict[str, Any],
    seed: int,
    pretrained: str | None = None,
    checkpoint: Checkpoint | None = None,
) -> None:
    """Train on labelled subjects (+ unlabelled held-out fMRI) and write model, latents and metrics.

    ``pretrained`` is an encoder to start from (pretrain_scmbm's, or a MinD-Vis checkpoint). Training reads
    only the ``train`` split; each step takes ``batch_size`` clips (each clip's window from every labelled
    subject, a seeded random repeat) and as many held-out windows, from streams that share
    ``train.buffer_mb``.
    """
    train_params, window = params["train"], encoder_params["window"]
    seed_everything(seed + SeedOffset.ALIGN, train_params["threads"])
    device = select_device(train_params["device"])
    qformer = load_video_qformer(teacher_dir).to(device)  # the teacher's LLM is not needed here
    features = feature_files(feature_paths)
    lengths = {segment: np.empty((n_tr, 0)) for segment, (_, n_tr) in features.items()}  # all check_coverage reads
    heldout = set(params["heldout"])
    files = dict(zip(subjects, open_splits(list(fmri_paths), "train"), strict=True))
    keys = {}
    for s, path in zip(subjects, fmri_paths, strict=True):
        for split in SPLITS:
            keys[s, split] = split_keys(path, split)
            check_coverage(lengths, keys[s, split], path)

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
    generator = torch.Generator().manual_seed(seed + SeedOffset.ALIGN_BATCHES)
    n_val = round(len(clips) * train_params["val_fraction"])
    val_clips: list[tuple[str, int]] = []
    if n_val:  # whole clips held out, for every labelled subject
        order = torch.randperm(len(clips), generator=generator).tolist()
        val_clips, clips = sorted(clips[i] for i in order[:n_val]), sorted(clips[i] for i in order[n_val:])
    targets = encode_targets(qformer, features, clips).to(device)  # (n_clips, Q, H)
    LOG.info(
        "aligning %d labelled subjects on %d clips (%d more to validate on); held out (unlabelled): %s",
        len(labelled),
        len(clips),
        len(val_clips),
        sorted(heldout) or "none",
    )

    model = BrainAligner(files[subjects[0]].shape, encoder_params, params, qformer, pretrained).to(device)
    shard = world()  # this process's share of every batch (one process: all of it)
    weights, batch_size = params["loss"], train_params["batch_size"]
    domain_loss = mmd if params["domain_method"] == "mmd" else coral
    uses_target = bool(heldout) and any(weights[term] > 0 for term in ADAPTATION_TERMS)
    buffer_mb = train_params["buffer_mb"] / (2 if uses_target else 1)
    pairs = clip_stream(
        [files[s] for s in labelled],
        [[np.array(rows_of[s][c]) for c in clips] for s in labelled],
        window,
        buffer_mb,
        seed + SeedOffset.ALIGN_CLIPS,
        rank=shard.rank,
        world_size=shard.size,
        workers=train_params["loader_workers"],
    )
    streams = [pairs]
    if uses_target:
        target_files = [files[s] for s in sorted(heldout)]
        streams.append(
            row_stream(
                target_files,
                [np.arange(f.n_rows) for f in target_files],
                window,
                buffer_mb,
                seed + SeedOffset.ALIGN_HELDOUT,
                rank=shard.rank,
                world_size=shard.size,
                workers=train_params["loader_workers"],
            )
        )

    trained = torch.nn.ModuleDict({"aligner": model})
    target_mbm = None
    if uses_target and weights["target_mbm"] > 0:  # masked modelling of the held-out windows
        head = params["target_mbm"]
        target_mbm = MaskedBrainModel(
            model.encoder,
            head["decoder"]["dim"],
            head["decoder"]["depth"],
            head["decoder"]["num_heads"],
            head["mask_ratio"],
        ).to(device)
        trained["target_mbm"] = target_mbm  # its encoder is the aligner's
    adversary = None
    if weights["adversarial"] > 0:  # a subject classifier (labelled + held-out) behind gradient reversal
        adversary = SubjectAdversary(targets.shape[-1], len(labelled) + len(heldout)).to(device)
        trained["subject_adversary"] = adversary

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        model.train()
        pick, windows = pairs.next(batch_size)  # (B,), (B, S, W, ...)
        pick, inputs = pick.to(device), windows.transpose(0, 1).flatten(0, 1).to(device)  # subject by subject
        terms, pooled = alignment_terms(model, len(labelled), pick, inputs, targets[pick], shard)
        target = None  # the held-out windows' pooled tokens and subject indices, for the adversary
        if uses_target:
            units, target_windows = streams[1].next(batch_size)
            target_domain = target_windows[:, 0].to(device)
            if weights["domain"] > 0 or adversary is not None:
                target_pooled = gather(model(target_domain).mean(1))  # the global batch, like ``pooled``
                subject = heldout_subjects(units, [f.n_rows for f in target_files], len(labelled))
                target = target_pooled, gather(subject.to(device))
            if weights["domain"] > 0:
                terms["domain"] = domain_loss(pooled, target_pooled)
            if target_mbm is not None:
                terms["target_mbm"] = target_mbm.train()(target_domain, generator, shard)[0]
        if adversary is not None:
            coefficient = dann_coefficient(step, train_params["steps"])
            terms["adversarial"] = adversary.loss(pooled, len(labelled), target, coefficient)
        loss = sum(weights[name] * value for name, value in terms.items())
        return loss, {name: value.item() for name, value in terms.items()}

    val_targets = encode_targets(qformer, features, val_clips).to(device) if val_clips else None
    val_rows = [np.array([rows_of[s][clip][0] for clip in val_clips]) for s in labelled]

    def validate() -> float:
        """The labelled terms on the held-out clips (first repeat of each), in eval mode."""
        assert val_targets is not None
        model.eval()
        brain = torch.cat(
            [
                model(batch.to(device))
                for s, rows in zip(labelled, val_rows, strict=True)
                for batch in iter_windows(files[s], rows, window, batch_size)
            ]
        )
        terms, _ = alignment_losses(
            brain, model.logit_scale, len(labelled), torch.arange(len(val_clips), device=device), val_targets
        )
        return float(sum(weights[name] * value for name, value in terms.items()))

    history = fit(
        trained,
        loss_fn,
        train_params,
        "pretrain_adaptor",
        checkpoint=checkpoint,
        generators=[generator],
        validate=validate if val_clips else None,
        device=device,
        stateful=streams,
    )
    if not shard.main:
        return
    with atomic_path(model_dir) as tmp_model:
        tmp_model.mkdir(parents=True)
        history.to_csv(tmp_model / "train_log.tsv", sep="\t", index=False)
        save_aligner(tmp_model, model, teacher_dir)
        metrics = write_latents(
            model=model,
            qformer=qformer,
            features=features,
            fmri_paths=fmri_paths,
            keys=keys,
            subjects=subjects,
            heldout=heldout,
            latent_paths=latent_paths,
            params=params,
            window=window,
            seed=seed,
        )
        metrics.to_csv(metrics_path, sep="\t", index=False, float_format="%.4f")
    LOG.info("identification:\n%s", metrics.to_string(index=False))


def write_latents(
    *,
    model: BrainAligner,
    qformer: torch.nn.Module,
    features: dict[str, tuple[str, int]],
    fmri_paths: Sequence[str],
    keys: dict[tuple[str, str], list[tuple[str, int]]],
    subjects: list[str],
    heldout: set[str],
    latent_paths: Sequence[str],
    params: dict[str, Any],
    window: int,
    seed: int,
    batch_size: int = 128,
) -> pd.DataFrame:
    """``/{split}/tokens`` for every subject, encoded ``batch_size`` windows at a time, and test-split
    identification against the video tokens (50-way, as MinD-Vis reports, and among all test clips)."""
    rows = []
    videos: dict[tuple, torch.Tensor] = {}  # subjects share their test clips: encode each set once
    for subject, fmri_path, path in zip(subjects, fmri_paths, latent_paths, strict=True):
        with atomic_h5(path, "align", params) as f:
            for split in SPLITS:
                bold, split_keys_ = BoldSplit(fmri_path, split), keys[subject, split]
                group, kept, written = f.create_group(split), [], 0
                for batch in iter_windows(bold, np.arange(bold.n_rows), window, batch_size):
                    tokens = model.encode(batch, batch_size)
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
