"""The optimisation loop shared by every training rule: AdamW, warm-up + cosine, clipping, TSV log, tqdm,
and resumable checkpoints so a job killed by a cluster (time limit, preemption, kill -9) continues where it
stopped and ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pandas as pd
import torch
from tqdm import tqdm

from llm4brain.resume import Checkpoint
from llm4brain.runtime import LOG, autocast, autocast_dtype


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup: int, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up for ``warmup`` steps, then cosine decay to zero at ``steps``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def cuda_rng(device: torch.device) -> dict[str, torch.Tensor]:
    """The CUDA device's RNG state (dropout on the GPU draws from it), for a checkpoint; nothing on CPU."""
    return {"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}


def fit(
    parameters: Iterable[torch.nn.Parameter],
    loss_fn: Callable[[int], tuple[torch.Tensor, dict[str, float]]],
    params: dict[str, Any],
    desc: str,
    log_tsv: str | Path | None = None,
    log_every: int = 25,
    checkpoint: Checkpoint | None = None,
    generators: Sequence[torch.Generator] = (),
    validate: Callable[[], float] | None = None,
    device: torch.device = torch.device("cpu"),
) -> pd.DataFrame:
    """Run ``params['steps']`` optimiser steps of ``loss_fn(step)`` and return the per-step history.

    ``loss_fn`` draws its own batch for the step from ``generators`` (seeded by the caller) and returns the
    total loss and the named terms to log. ``params`` is a ``train`` config section. With ``checkpoint``,
    the trainable parameters, optimiser, schedule, history and every RNG (``generators`` and torch's global
    ones, CPU and ``device``'s, which dropout uses) are saved every ``params['checkpoint_every']`` steps and
    restored on the next call. ``loss_fn`` and ``validate`` run under ``params['precision']``'s autocast on
    ``device`` (where the caller placed the model); the backward pass and the optimiser stay in fp32.
    With ``validate`` (the loss on held-out data), it runs every ``params['eval_every']`` steps and at the
    end; training stops after ``params['patience']`` validations without a new best (0 = never), and the
    best validated weights are the ones left in the model.
    """
    trainable = [p for p in parameters if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=params["lr"], weight_decay=params["weight_decay"])
    scheduler = cosine_with_warmup(optimizer, params["warmup"], params["steps"])
    rows: list[dict[str, float]] = []
    start = 0
    best: dict[str, Any] = {"loss": float("inf"), "parameters": None, "stale": 0}
    if checkpoint:  # a job requeued onto another kind of device starts over: its numerics (and RNGs) differ
        checkpoint = checkpoint.where(device.type, str(autocast_dtype(device, params["precision"])))
    state = checkpoint.load() if checkpoint else None
    if state is not None:
        with torch.no_grad():
            for p, saved in zip(trainable, state["parameters"], strict=True):
                p.copy_(saved)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        for generator, saved in zip(generators, state["generators"], strict=True):
            generator.set_state(saved)
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        rows, start, best = state["rows"], state["step"], state["best"]
        LOG.info("%s: resuming from step %d (%s)", desc, start, checkpoint.path)
    every = params["checkpoint_every"]
    bar = tqdm(range(start, params["steps"]), desc=desc, mininterval=1.0, initial=start, total=params["steps"])
    micro = params["accumulate"]
    for step in bar:
        optimizer.zero_grad(set_to_none=True)
        losses, parts = [], []
        for _ in range(micro):  # gradient accumulation: micro-batches of batch_size, one optimiser step
            with autocast(device, params["precision"]):
                loss, terms = loss_fn(step)
            (loss / micro).backward()
            losses.append(loss.item())
            parts.append(terms)
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, params["grad_clip"])
        optimizer.step()
        scheduler.step()
        terms = {key: sum(p[key] for p in parts) / micro for key in parts[0]}
        row = {"step": step, "loss": sum(losses) / micro, "grad_norm": grad_norm.item(),
               "lr": scheduler.get_last_lr()[0], **terms}
        rows.append(row)
        last = step == params["steps"] - 1
        if validate is not None and ((step + 1) % params["eval_every"] == 0 or last):
            with torch.no_grad(), autocast(device, params["precision"]):
                row["val_loss"] = validate()
            if row["val_loss"] < best["loss"]:
                best = {"loss": row["val_loss"], "parameters": [p.detach().clone() for p in trainable], "stale": 0}
            else:
                best["stale"] += 1
        if step % log_every == 0 or last or "val_loss" in row:
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            LOG.info("%s step %d: %s", desc, step, " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "step"))
        if params["patience"] and best["stale"] >= params["patience"]:
            LOG.info("%s: stopping at step %d, no better validation loss in %d validations (best %.4g)", desc, step,
                     best["stale"], best["loss"])
            break
        if checkpoint and every and (step + 1) % every == 0 and step + 1 < params["steps"]:
            checkpoint.save({"step": step + 1, "rows": rows, "parameters": [p.detach() for p in trainable],
                             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                             "generators": [g.get_state() for g in generators], "torch_rng": torch.get_rng_state(),
                             "best": best, **cuda_rng(device)})
    if best["parameters"] is not None:
        with torch.no_grad():
            for p, saved in zip(trainable, best["parameters"], strict=True):
                p.copy_(saved)
        LOG.info("%s: kept the weights of the best validation loss %.4g", desc, best["loss"])
    if checkpoint:
        checkpoint.path.unlink(missing_ok=True)
    history = pd.DataFrame(rows)
    if log_tsv:
        history.to_csv(log_tsv, sep="\t", index=False)
    return history
