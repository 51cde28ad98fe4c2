"""Nonlinear residual bottleneck adaptors (Houlsby et al. 2019) inserted into frozen models."""

from __future__ import annotations

import torch
from torch import nn


class BottleneckAdaptor(nn.Module):
    """``x + scale · up(GELU(down(x)))``; the scale starts near zero so the host model starts unchanged."""

    def __init__(self, dim: int, bottleneck: int, scale_init: float = 1e-3) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, dim)
        self.scale = nn.Parameter(torch.tensor(float(scale_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.up(self.act(self.down(x)))


class Adapted(nn.Module):
    """A frozen linear layer followed by a trainable adaptor on its output."""

    def __init__(self, base: nn.Linear, bottleneck: int, scale_init: float) -> None:
        super().__init__()
        self.base = base
        self.adaptor = BottleneckAdaptor(base.out_features, bottleneck, scale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adaptor(self.base(x))


def add_adaptors(model: nn.Module, suffixes: tuple[str, ...], bottleneck: int, scale_init: float) -> list[str]:
    """Freeze ``model`` and wrap every ``nn.Linear`` whose name ends with one of ``suffixes``.

    Returns the wrapped names (an empty list means the suffixes matched nothing, which callers treat as an
    error: adaptors that are never inserted would silently turn the method into a frozen baseline).
    """
    for param in model.parameters():
        param.requires_grad_(False)
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear) and name.endswith(suffixes)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Adapted(getattr(parent, child), bottleneck, scale_init))
    return names
