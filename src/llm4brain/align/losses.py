"""Alignment and domain-adaptation losses on pooled latents (B, D)."""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F


def info_nce(
    brain: torch.Tensor, video: torch.Tensor, positives: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE between L2-normalised ``brain`` (N, D) and ``video`` (M, D) rows.

    ``positives`` (N, M) marks the pairs that show the same clip. With several positives (one clip seen by
    several subjects or repeats) the loss is ``-log`` of the probability mass on all of them, so no
    positive is another's negative and perfect alignment scores zero.
    """
    logits = logit_scale.exp().clamp(max=100.0) * F.normalize(brain, dim=-1) @ F.normalize(video, dim=-1).T
    blocked = ~positives.bool()
    brain_to_video = -torch.logsumexp(F.log_softmax(logits, dim=1).masked_fill(blocked, -torch.inf), dim=1)
    has_pos = positives.bool().any(0)
    video_to_brain = -torch.logsumexp(F.log_softmax(logits, dim=0).masked_fill(blocked, -torch.inf), dim=0)[has_pos]
    return 0.5 * (brain_to_video.mean() + video_to_brain.mean())


def cross_subject(latents: torch.Tensor) -> torch.Tensor:
    """(S, B, D) latents of S subjects for the same B clips → mean squared distance between subject pairs."""
    s = latents.shape[0]
    if s < 2:
        return latents.new_zeros(())
    z = F.normalize(latents, dim=-1)
    pairs = (((z[i] - z[j]) ** 2).sum(-1).mean() for i in range(s) for j in range(i + 1, s))
    total = cast(torch.Tensor, sum(pairs))  # a tensor: s >= 2 gives at least one pair
    return total / (s * (s - 1) / 2)


def mmd(
    source: torch.Tensor, target: torch.Tensor, scales: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
) -> torch.Tensor:
    """Multi-kernel RBF maximum mean discrepancy; bandwidths are multiples of the median pairwise distance.
    Computed in fp32 whatever the autocast (exponentials of bf16 distances lose the small discrepancies)."""
    with torch.autocast(source.device.type, enabled=False):
        return _mmd(source.float(), target.float(), scales)


def _mmd(source: torch.Tensor, target: torch.Tensor, scales: tuple[float, ...]) -> torch.Tensor:
    x = torch.cat([source, target])
    d2 = torch.cdist(x, x).pow(2)
    median = d2.detach()[d2.detach() > 0].median().clamp(min=1e-6)
    k = cast(torch.Tensor, sum(torch.exp(-d2 / (median * s)) for s in scales))  # a tensor: scales is never empty
    n = source.shape[0]
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


def coral(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CORAL: squared Frobenius distance between the two feature covariances, scaled by 1 / (4 D²); in fp32
    whatever the autocast."""
    d = source.shape[1]
    with torch.autocast(source.device.type, enabled=False):
        cs, ct = torch.cov(source.float().T), torch.cov(target.float().T)
        return ((cs - ct) ** 2).sum() / (4 * d * d)
