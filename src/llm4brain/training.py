"""The optimisation loop shared by every training rule: AdamW, warm-up + cosine, clipping, TSV log, tqdm."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd
import torch
from tqdm import tqdm

from llm4brain.runtime import LOG


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup: int, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up for ``warmup`` steps, then cosine decay to zero at ``steps``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fit(
    parameters: Iterable[torch.nn.Parameter],
    loss_fn: Callable[[int], tuple[torch.Tensor, dict[str, float]]],
    params: dict[str, Any],
    desc: str,
    log_tsv: str | Path | None = None,
    log_every: int = 25,
) -> pd.DataFrame:
    """Run ``params['steps']`` optimiser steps of ``loss_fn(step)`` and return the per-step history.

    ``loss_fn`` draws its own batch for the step (seeded by the caller) and returns the total loss and the
    named terms to log. ``params`` is a ``train`` config section.
    """
    trainable = [p for p in parameters if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=params["lr"], weight_decay=params["weight_decay"])
    scheduler = cosine_with_warmup(optimizer, params["warmup"], params["steps"])
    rows = []
    bar = tqdm(range(params["steps"]), desc=desc, mininterval=1.0)
    for step in bar:
        loss, terms = loss_fn(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, params["grad_clip"])
        optimizer.step()
        scheduler.step()
        row = {"step": step, "loss": loss.item(), "grad_norm": grad_norm.item(), "lr": scheduler.get_last_lr()[0], **terms}
        rows.append(row)
        if step % log_every == 0 or step == params["steps"] - 1:
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            LOG.info("%s step %d: %s", desc, step, " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "step"))
    history = pd.DataFrame(rows)
    if log_tsv:
        history.to_csv(log_tsv, sep="\t", index=False)
    return history
