"""Adaptors inserted into frozen models: nonlinear residual bottlenecks (Houlsby et al. 2019) or LoRA (peft)."""

from __future__ import annotations

import torch
from torch import nn

from llm4brain.sections import AlignAdaptorConfig


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

    Returns the wrapped names.
    """
    for param in model.parameters():
        param.requires_grad_(False)
    names = [
        name for name, module in model.named_modules() if isinstance(module, nn.Linear) and name.endswith(suffixes)
    ]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Adapted(getattr(parent, child), bottleneck, scale_init))
    return names


def add_lora(model: nn.Module, suffixes: tuple[str, ...], r: int, alpha: float) -> list[str]:
    """Freeze ``model`` and give every ``nn.Linear`` whose name ends with one of ``suffixes`` a peft LoRA
    adapter (zero-initialised up-projection, so the model starts unchanged). Returns the adapted names."""
    from peft import LoraConfig, inject_adapter_in_model  # peft takes seconds to import: only when used

    names = [
        name for name, module in model.named_modules() if isinstance(module, nn.Linear) and name.endswith(suffixes)
    ]
    if names:
        # peft annotates lora_alpha as int but only divides by it: a float alpha (config: number) scales as given
        inject_adapter_in_model(LoraConfig(r=r, lora_alpha=alpha, target_modules=names), model)  # type: ignore[arg-type]
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)
    return names


def adapt(model: nn.Module, suffixes: tuple[str, ...], adaptor: AlignAdaptorConfig) -> list[str]:
    """Freeze ``model`` and train only adaptors on the named linear layers: bottleneck or LoRA, as the
    config's ``align.adaptor`` section says. Matching nothing is an error (the method would silently
    become a frozen baseline)."""
    if adaptor.kind == "lora":
        names = add_lora(model, suffixes, adaptor.lora_r, adaptor.lora_alpha)
    else:
        names = add_adaptors(model, suffixes, adaptor.bottleneck, adaptor.scale_init)
    if not names:
        raise ValueError(f"no adaptor sites ending with {suffixes} in {type(model).__name__}")
    return names
