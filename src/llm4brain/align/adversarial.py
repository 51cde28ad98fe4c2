"""Adversarial subject invariance (DANN, Ganin & Lempitsky 2015): a subject classifier reads the pooled brain
tokens through a gradient-reversal layer, so the classifier learns to tell the subjects apart while the aligner
is pushed to make their tokens indistinguishable (the held-out subject's included, without its labels).

The loss is a per-sample mean cross-entropy: under data parallelism each process's share of the batch gives
an unbiased part of it, and averaging the gradients over processes gives the one-process gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient times ``-coefficient`` backward."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, coefficient: float) -> torch.Tensor:
        ctx.coefficient = coefficient  # type: ignore[attr-defined]
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coefficient * grad, None  # type: ignore[attr-defined]


def reverse_gradient(x: torch.Tensor, coefficient: float = 1.0) -> torch.Tensor:
    return GradientReversal.apply(x, coefficient)


def dann_coefficient(step: int, steps: int, gamma: float = 10.0) -> float:
    """Ganin & Lempitsky's ramp 2 / (1 + exp(-γ p)) - 1 over training progress p = step / steps: the reversed
    gradient starts at zero, while the classifier is still guessing, and approaches 1."""
    return 2.0 / (1.0 + math.exp(-gamma * step / max(steps, 1))) - 1.0


class SubjectAdversary(nn.Module):
    """A two-layer subject classifier on pooled tokens (N, H), behind a gradient-reversal layer."""

    def __init__(self, hidden_size: int, n_subjects: int) -> None:
        super().__init__()
        self.classifier = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, n_subjects)
        )

    def forward(self, pooled: torch.Tensor, coefficient: float = 1.0) -> torch.Tensor:
        """Subject logits (N, n_subjects); the aligner below receives the classifier's gradient reversed."""
        return self.classifier(reverse_gradient(pooled, coefficient))

    def loss(
        self,
        labelled: torch.Tensor,
        n_labelled: int,
        target: tuple[torch.Tensor, torch.Tensor] | None = None,
        coefficient: float = 1.0,
    ) -> torch.Tensor:
        """Mean cross-entropy of the subject of every sample: ``labelled`` (S·B, H) stacked subject by subject
        (subjects 0 … S-1), and ``target`` the held-out samples' pooled tokens with their subject indices
        (S, S+1, …)."""
        labels = torch.arange(n_labelled, device=labelled.device).repeat_interleave(len(labelled) // n_labelled)
        pooled = labelled
        if target is not None:
            pooled, labels = torch.cat([labelled, target[0]]), torch.cat([labels, target[1].to(labelled.device)])
        return F.cross_entropy(self(pooled.float(), coefficient), labels)


def heldout_subjects(units: torch.Tensor, n_rows: list[int], n_labelled: int) -> torch.Tensor:
    """The subject index (``n_labelled`` + file index) of each held-out sample, from its unit id in a row
    stream over the held-out files (units number the rows of file 0, then file 1, …)."""
    offsets = torch.tensor(n_rows).cumsum(0)
    return n_labelled + torch.searchsorted(offsets, units, right=True)
