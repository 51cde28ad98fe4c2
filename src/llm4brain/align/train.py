"""``pretrain_adaptor``: train the brain aligner, then write every subject's latents and retrieval metrics.

Labelled subjects contribute (fMRI, clip) pairs; held-out subjects contribute only their unlabelled
training-split fMRI, through the domain-adaptation term.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd
import torch

from llm4brain.align.losses import coral, cross_subject, info_nce, mmd
from llm4brain.align.model import BrainAligner, save_aligner
from llm4brain.artifacts import (ArtifactError, atomic_h5, atomic_path, check_coverage, read_features, read_split,
                                 set_attrs, write_keys)
from llm4brain.models.video_llm import VideoQFormer, encode_clips, load_teacher
from llm4brain.runtime import LOG, seed_everything
from llm4brain.training import Checkpoint, fit

SPLITS = ("train", "test")


def identification(brain: torch.Tensor, video: torch.Tensor, targets: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """n-way clip identification: is row i's own clip among the k most similar of all n candidate clips?"""
    sim = torch.nn.functional.normalize(brain.mean(1), dim=-1) @ torch.nn.functional.normalize(video.mean(1), dim=-1).T
    rank = (sim > sim[torch.arange(len(targets)), torch.from_numpy(targets)][:, None]).sum(1)
    n = video.shape[0]
    out = {"n_way": n}
    for k in ks:
        out[f"top{k}"] = float((rank < k).float().mean())
        out[f"chance_top{k}"] = min(k, n) / n
    return out


def pretrain_adaptor(fmri_paths: list[str], feature_paths: list[str], teacher_dir: str, model_dir: str,
                     latent_paths: list[str], metrics_path: str, subjects: list[str], params: dict[str, Any],
                     seed: int, checkpoint: Checkpoint | None = None) -> None:
    """Train on labelled subjects (+ unlabelled held-out fMRI) and write model, latents and metrics."""
    seed_everything(seed + 20, params["train"]["threads"])
    qformer, _, _ = load_teacher(teacher_dir)
    features = read_features(feature_paths)
    heldout = set(params["heldout"])
    data = {s: {split: read_split(path, "fmri", split, "bold") for split in SPLITS} for s, path in zip(subjects, fmri_paths)}
    for s, path in zip(subjects, fmri_paths):
        for split in SPLITS:
            check_coverage(features, data[s][split][1], path)
    grid = data[subjects[0]]["train"][0].shape[1:]
    for s in subjects:
        if data[s]["train"][0].shape[1:] != grid:
            raise ArtifactError(f"{s}: fMRI grid {data[s]['train'][0].shape[1:]} differs from {subjects[0]}'s {grid}")

    labelled = [s for s in subjects if s not in heldout]
    rows_of: dict[str, dict[tuple[str, int], list[int]]] = {s: defaultdict(list) for s in labelled}
    for s in labelled:
        for i, key in enumerate(data[s]["train"][1]):
            rows_of[s][key].append(i)
    clips = sorted(set.intersection(*(set(rows_of[s]) for s in labelled)))
    targets = encode_clips(qformer, features, clips)  # (n_clips, Q, H)
    LOG.info("aligning %d labelled subjects on %d clips; held out (unlabelled): %s", len(labelled), len(clips),
             sorted(heldout) or "none")

    bold = {s: torch.from_numpy(data[s]["train"][0]) for s in subjects}
    unlabelled = torch.cat([bold[s] for s in sorted(heldout)]) if heldout else None
    model = BrainAligner(grid, params, qformer)
    weights, batch_size = params["loss"], params["train"]["batch_size"]
    domain_loss = mmd if params["domain_method"] == "mmd" else coral
    generator = torch.Generator().manual_seed(seed + 21)

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        model.train()
        pick = torch.randint(len(clips), (batch_size,), generator=generator)
        rows = [[rows_of[s][clips[c]][int(torch.randint(len(rows_of[s][clips[c]]), (1,), generator=generator))]
                 for c in pick.tolist()] for s in labelled]
        volumes = torch.cat([bold[s][r] for s, r in zip(labelled, rows)])
        brain = model(volumes)  # (S·B, Q, H)
        video = targets[pick]
        pooled = brain.mean(1)
        same = pick[None, :] == pick[:, None]
        terms = {
            "contrastive": info_nce(pooled, video.mean(1), same.repeat(len(labelled), 1), model.logit_scale),
            "token_mse": ((brain - video.repeat(len(labelled), 1, 1)) ** 2).mean(),
            "cross_subject": cross_subject(pooled.view(len(labelled), batch_size, -1)),
        }
        if unlabelled is not None and weights["domain"] > 0:
            idx = torch.randint(len(unlabelled), (batch_size,), generator=generator)
            terms["domain"] = domain_loss(pooled, model(unlabelled[idx]).mean(1))
        loss = sum(weights[name] * value for name, value in terms.items())
        return loss, {name: value.item() for name, value in terms.items()}

    with atomic_path(model_dir) as tmp_model:
        tmp_model.mkdir(parents=True)
        fit(model.parameters(), loss_fn, params["train"], "pretrain_adaptor", tmp_model / "train_log.tsv",
            checkpoint=checkpoint, generators=[generator])
        save_aligner(tmp_model, model, grid, params, teacher_dir)
        metrics = write_latents(model, qformer, features, data, subjects, heldout, latent_paths, params)
        metrics.to_csv(metrics_path, sep="\t", index=False, float_format="%.4f")
    LOG.info("identification:\n%s", metrics.to_string(index=False))


def write_latents(model: BrainAligner, qformer: VideoQFormer, features: dict[str, np.ndarray], data: dict,
                  subjects: list[str], heldout: set[str], latent_paths: list[str], params: dict[str, Any]) -> pd.DataFrame:
    """``/{split}/tokens`` for every subject, and test-split identification against the video tokens."""
    rows = []
    for subject, path in zip(subjects, latent_paths):
        with atomic_h5(path, "align", params) as f:
            for split in SPLITS:
                bold, keys = data[subject][split]
                tokens = model.encode(torch.from_numpy(bold))
                group = f.create_group(split)
                group.create_dataset("tokens", data=tokens.numpy().astype(np.float16))
                write_keys(group, [k[0] for k in keys], [k[1] for k in keys])
                if split == "test":
                    candidates = sorted(set(keys))
                    index = {k: i for i, k in enumerate(candidates)}
                    scores = identification(tokens, encode_clips(qformer, features, candidates),
                                            np.array([index[k] for k in keys]))
                    set_attrs(group, scores)
                    rows.append({"subject": subject, "heldout": subject in heldout, "split": split, **scores})
            set_attrs(f, {"subject": subject, "heldout": subject in heldout})
    return pd.DataFrame(rows)
