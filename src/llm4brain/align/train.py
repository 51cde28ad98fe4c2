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
from llm4brain.align.windows import windows
from llm4brain.artifacts import (ArtifactError, atomic_h5, atomic_path, check_coverage, read_features, read_split,
                                 set_attrs, write_keys)
from llm4brain.ranking import topk_accuracy, topk_hits
from llm4brain.models.mbm import MaskedBrainModel
from llm4brain.models.video_llm import VideoQFormer, encode_clips, load_video_qformer
from llm4brain.runtime import LOG, seed_everything, select_device
from llm4brain.resume import Checkpoint
from llm4brain.training import fit

SPLITS = ("train", "test")


def identification(brain: torch.Tensor, video: torch.Tensor, targets: np.ndarray, n_way: int | None = None,
                   ks: tuple[int, ...] = (1, 5), trials: int = 100, seed: int = 0) -> dict[str, float]:
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
    out = {"n_way": n}
    for k in ks:
        out[f"top{k}"] = float(topk_hits(candidates, sim[np.arange(len(targets)), targets][None, :], k).mean())
        out[f"chance_top{k}"] = min(k, n) / n
    return out


class AlignBatches:
    """The input pipeline of pretrain_adaptor: each step, ``batch_size`` clips, each clip's fMRI window from
    every labelled subject (a random repeat), and as many unlabelled held-out windows (domain adaptation)."""

    def __init__(self, bold: dict[str, torch.Tensor], rows_of: dict[str, dict[tuple[str, int], list[int]]],
                 labelled: list[str], clips: list[tuple[str, int]], unlabelled: torch.Tensor | None,
                 batch_size: int, generator: torch.Generator) -> None:
        self.bold, self.labelled, self.unlabelled = bold, labelled, unlabelled
        self.rows = [[rows_of[s][clip] for clip in clips] for s in labelled]  # per subject, per clip: repeats
        self.n_clips, self.batch_size, self.generator = len(clips), batch_size, generator

    def draw(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Clip indices (B,), labelled windows (S·B, W, ...), held-out windows (B, W, ...) or None."""
        pick = torch.randint(self.n_clips, (self.batch_size,), generator=self.generator)
        rows = [[repeats[c][int(torch.randint(len(repeats[c]), (1,), generator=self.generator))]
                 for c in pick.tolist()] for repeats in self.rows]
        inputs = torch.cat([self.bold[s][r] for s, r in zip(self.labelled, rows)])
        target = None
        if self.unlabelled is not None:
            target = self.unlabelled[torch.randint(len(self.unlabelled), (self.batch_size,), generator=self.generator)]
        return pick, inputs, target


def alignment_terms(model: BrainAligner, n_subjects: int, pick: torch.Tensor, inputs: torch.Tensor,
                    video: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The labelled loss terms for clips ``pick`` seen by each of ``n_subjects`` (``inputs`` stacked subject
    by subject), and the pooled brain tokens."""
    brain = model(inputs)  # (S·B, Q, H)
    pooled = brain.mean(1)
    same = pick[None, :] == pick[:, None]
    return {
        "contrastive": info_nce(pooled, video.mean(1), same.repeat(n_subjects, 1), model.logit_scale),
        "token_mse": ((brain - video.repeat(n_subjects, 1, 1)) ** 2).mean(),
        "cross_subject": cross_subject(pooled.view(n_subjects, len(pick), -1)),
    }, pooled


def pretrain_adaptor(fmri_paths: list[str], feature_paths: list[str], teacher_dir: str, model_dir: str,
                     latent_paths: list[str], metrics_path: str, subjects: list[str], encoder_params: dict[str, Any],
                     params: dict[str, Any], seed: int, pretrained: str | None = None,
                     checkpoint: Checkpoint | None = None) -> None:
    """Train on labelled subjects (+ unlabelled held-out fMRI) and write model, latents and metrics.

    ``pretrained`` is an encoder to start from (pretrain_scmbm's, or a MinD-Vis checkpoint).
    """
    seed_everything(seed + 20, params["train"]["threads"])
    device = select_device(params["train"]["device"])
    qformer = load_video_qformer(teacher_dir).to(device)  # the teacher's LLM is not needed here
    features = read_features(feature_paths)
    heldout = set(params["heldout"])
    data = {}
    for s, path in zip(subjects, fmri_paths):
        data[s] = {}
        for split in SPLITS:
            bold, keys = read_split(path, "fmri", split, "bold")
            check_coverage(features, keys, path)
            data[s][split] = (windows(bold, keys, encoder_params["window"]), keys)
    grid = data[subjects[0]]["train"][0].shape[2:]
    for s in subjects:
        if data[s]["train"][0].shape[2:] != grid:
            raise ArtifactError(f"{s}: fMRI grid {data[s]['train'][0].shape[2:]} differs from {subjects[0]}'s {grid}")

    labelled = [s for s in subjects if s not in heldout]
    rows_of: dict[str, dict[tuple[str, int], list[int]]] = {s: defaultdict(list) for s in labelled}
    for s in labelled:
        for i, key in enumerate(data[s]["train"][1]):
            rows_of[s][key].append(i)
    clips = sorted(set.intersection(*(set(rows_of[s]) for s in labelled)))
    generator = torch.Generator().manual_seed(seed + 21)
    n_val = int(round(len(clips) * params["train"]["val_fraction"]))
    val_clips: list[tuple[str, int]] = []
    if n_val:  # whole clips held out, for every labelled subject
        order = torch.randperm(len(clips), generator=generator).tolist()
        val_clips, clips = sorted(clips[i] for i in order[:n_val]), sorted(clips[i] for i in order[n_val:])
    targets = encode_clips(qformer, features, clips).to(device)  # (n_clips, Q, H)
    LOG.info("aligning %d labelled subjects on %d clips (%d more to validate on); held out (unlabelled): %s",
             len(labelled), len(clips), len(val_clips), sorted(heldout) or "none")

    bold = {s: torch.from_numpy(data[s]["train"][0]) for s in subjects}
    unlabelled = torch.cat([bold[s] for s in sorted(heldout)]) if heldout else None
    model = BrainAligner(grid, encoder_params, params, qformer, pretrained).to(device)
    weights, batch_size = params["loss"], params["train"]["batch_size"]
    domain_loss = mmd if params["domain_method"] == "mmd" else coral

    uses_target = weights["domain"] > 0 or weights["target_mbm"] > 0
    batches = AlignBatches(bold, rows_of, labelled, clips, unlabelled if uses_target else None, batch_size, generator)

    trainable = list(model.parameters())
    target_mbm = None
    if unlabelled is not None and weights["target_mbm"] > 0:  # masked modelling of the held-out windows
        head = params["target_mbm"]
        target_mbm = MaskedBrainModel(model.encoder, head["decoder"]["dim"], head["decoder"]["depth"],
                                      head["decoder"]["num_heads"], head["mask_ratio"]).to(device)
        trainable += [p for name, p in target_mbm.named_parameters() if not name.startswith("encoder.")]

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        model.train()
        pick, inputs, target_domain = (None if x is None else x.to(device) for x in batches.draw())
        terms, pooled = alignment_terms(model, len(labelled), pick, inputs, targets[pick])
        if target_domain is not None and weights["domain"] > 0:
            terms["domain"] = domain_loss(pooled, model(target_domain).mean(1))
        if target_mbm is not None:
            terms["target_mbm"] = target_mbm.train()(target_domain, generator)[0]
        loss = sum(weights[name] * value for name, value in terms.items())
        return loss, {name: value.item() for name, value in terms.items()}

    val_targets = encode_clips(qformer, features, val_clips).to(device) if val_clips else None
    val_rows = [[rows_of[s][clip][0] for clip in val_clips] for s in labelled]

    def validate() -> float:
        """The labelled terms on the held-out clips (first repeat of each), in eval mode."""
        model.eval()
        inputs = torch.cat([bold[s][r] for s, r in zip(labelled, val_rows)]).to(device)
        terms, _ = alignment_terms(model, len(labelled), torch.arange(len(val_clips), device=device), inputs,
                                   val_targets)
        return float(sum(weights[name] * value for name, value in terms.items()))

    with atomic_path(model_dir) as tmp_model:
        tmp_model.mkdir(parents=True)
        fit(trainable, loss_fn, params["train"], "pretrain_adaptor", tmp_model / "train_log.tsv",
            checkpoint=checkpoint, generators=[generator], validate=validate if val_clips else None,
            device=device)
        save_aligner(tmp_model, model, teacher_dir)
        metrics = write_latents(model, qformer, features, data, subjects, heldout, latent_paths, params, seed)
        metrics.to_csv(metrics_path, sep="\t", index=False, float_format="%.4f")
    LOG.info("identification:\n%s", metrics.to_string(index=False))


def write_latents(model: BrainAligner, qformer: VideoQFormer, features: dict[str, np.ndarray], data: dict,
                  subjects: list[str], heldout: set[str], latent_paths: list[str], params: dict[str, Any],
                  seed: int) -> pd.DataFrame:
    """``/{split}/tokens`` for every subject, and test-split identification against the video tokens
    (50-way, as MinD-Vis reports, and among all test clips)."""
    rows = []
    videos: dict[tuple, torch.Tensor] = {}  # subjects share their test clips: encode each set once
    for subject, path in zip(subjects, latent_paths):
        with atomic_h5(path, "align", params) as f:
            for split in SPLITS:
                bold, keys = data[subject][split]
                tokens = model.encode(torch.from_numpy(bold))
                group = f.create_group(split)
                group.create_dataset("tokens", data=tokens.numpy().astype(np.float16))
                write_keys(group, [k[0] for k in keys], [k[1] for k in keys])
                if split == "test":
                    candidates = tuple(sorted(set(keys)))
                    index = {k: i for i, k in enumerate(candidates)}
                    if candidates not in videos:
                        videos[candidates] = encode_clips(qformer, features, list(candidates))
                    video = videos[candidates]
                    targets = np.array([index[k] for k in keys])
                    for n_way in (50, None):
                        scores = identification(tokens, video, targets, n_way, seed=seed)
                        rows.append({"subject": subject, "heldout": subject in heldout, "split": split, **scores})
                    set_attrs(group, scores)  # among all test clips
            set_attrs(f, {"subject": subject, "heldout": subject in heldout})
    return pd.DataFrame(rows).drop_duplicates(["subject", "n_way"])
