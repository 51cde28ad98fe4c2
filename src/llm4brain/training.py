"""The optimisation loop shared by every training rule: AdamW, warm-up + cosine, clipping, TSV log, tqdm,
resumable checkpoints so a job killed by a cluster (time limit, preemption, kill -9) continues where it
stopped and ends bit-identical to an uninterrupted run, and data parallelism (DDP) across the processes of
:func:`llm4brain.distributed.launch`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pandas as pd
import torch
from tqdm import tqdm

from llm4brain.artifacts import atomic_path
from llm4brain.distributed import average, gather_objects, world
from llm4brain.resume import Checkpoint
from llm4brain.runtime import LOG, autocast, autocast_dtype, seed_everything, select_device
from llm4brain.sections import TrainConfig
from llm4brain.seeds import rank_seed

T = TypeVar("T")


def begin_stage(train: TrainConfig, seed: int) -> torch.device:
    """What every trainer does first: seed Python, numpy and torch with ``seed`` (the replicate's, plus the
    stage's offset) on the section's CPU threads, and pick the device the section names.

    Args:
        train: the stage's ``train`` section (``threads``, ``device``).
        seed: the stage's seed.

    Returns:
        The device the stage trains on.
    """
    seed_everything(seed, train.threads)
    return select_device(train.device)


@contextmanager
def model_folder(out_dir: str | Path, history: pd.DataFrame | None = None) -> Iterator[Path]:
    """What every trainer does last, on the main process only (the others return before): a new folder that
    appears at ``out_dir`` only once the block completes, with ``train_log.tsv`` (``history``) in it.

    Args:
        out_dir: the stage's model folder.
        history: the training log :func:`fit` returned; None when the stage writes it elsewhere.

    Yields:
        The folder being written, renamed to ``out_dir`` when the block ends without an error.
    """
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        if history is not None:
            history.to_csv(tmp / "train_log.tsv", sep="\t", index=False)
        yield tmp


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup: int, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up for ``warmup`` steps, then cosine decay to zero at ``steps``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's global RNG states (dropout draws from them: the CPU's, and the CUDA device's)."""
    state = {"torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def seed_rank(device: torch.device) -> None:
    """Give each process of a data-parallel job its own global RNG stream, from the stage's seed and its
    rank (as Accelerate's ``set_seed(device_specific=True)``): dropout and other per-sample noise differ
    between processes. Called once the model is built (and DDP has broadcast rank 0's trainable weights),
    so that everything built from the seed, frozen weights included, is the same on every process. One
    process keeps its stream as it is."""
    w = world()
    if w.size > 1:
        torch.manual_seed(rank_seed(torch.initial_seed(), w.rank))  # the CUDA devices' generators too


class Stateful(Protocol):
    """What else a checkpoint keeps (a data stream's position): torch's ``state_dict`` convention."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Objective(torch.nn.Module):
    """A rule's loss function as the forward of a module holding everything it trains: what DDP wraps (it
    hooks a module's forward and its parameters' gradients). ``loss_fn`` calls the submodules itself."""

    def __init__(self, module: torch.nn.Module, loss_fn: Callable[[int], tuple[torch.Tensor, dict[str, float]]]):
        super().__init__()
        self.module, self.loss_fn = module, loss_fn

    def forward(self, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss_fn(step)


def running_statistics(module: torch.nn.Module) -> list[str]:
    """The submodules that update buffers while training (BatchNorm-like running statistics)."""
    from torch.nn.modules.batchnorm import _NormBase

    return [name for name, m in module.named_modules() if isinstance(m, _NormBase) and m.track_running_stats]


def data_parallel(objective: Objective, device: torch.device) -> torch.nn.Module:
    """``objective`` under DDP when the job runs several processes. Only the trainable parameters are synced
    (every process builds the frozen ones, a 4-bit base included, identically from the same seed and
    files); unused ones are allowed (a term switched off for a step).

    Buffers are not synced: every process builds the same constant ones (position ids, masks). A module
    that changes its buffers in training (running statistics) would keep one per process, so it is refused.
    """
    if world().size == 1:
        return objective
    from torch.nn.parallel import DistributedDataParallel

    if stateful := running_statistics(objective):
        raise ValueError(
            f"{', '.join(stateful)} keep running statistics, which each of {world().size} processes would "
            "update on its own share: use a normalisation without them (LayerNorm, GroupNorm) or train.devices: 1"
        )

    frozen = [name for name, p in objective.named_parameters() if not p.requires_grad]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        objective, frozen + [name for name, _ in objective.named_buffers()]
    )
    return DistributedDataParallel(
        objective,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True,
    )


@dataclass
class Run:
    """One training run's moving parts: what a checkpoint saves and restores, and one optimiser step."""

    objective: torch.nn.Module
    trainable: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    generators: Sequence[torch.Generator]
    stateful: Sequence[Stateful]
    device: torch.device
    train: TrainConfig
    rows: list[dict[str, float]] = field(default_factory=list)
    start: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"loss": float("inf"), "parameters": None, "stale": 0})

    def state(self, step: int, rngs: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
        """Everything a rerun needs to continue at ``step`` as if never stopped; ``rngs`` is every process's
        :func:`rng_state`, in rank order."""
        return {
            "step": step,
            "rows": self.rows,
            "parameters": [p.detach() for p in self.trainable],
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generators": [g.get_state() for g in self.generators],
            "rngs": rngs,
            "stateful": [s.state_dict() for s in self.stateful],
            "best": self.best,
        }

    def restore(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for p, saved in zip(self.trainable, state["parameters"], strict=True):
                p.copy_(saved)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for generator, saved in zip(self.generators, state["generators"], strict=True):
            generator.set_state(saved)
        for stateful, saved in zip(self.stateful, state["stateful"], strict=True):
            stateful.load_state_dict(saved)
        rank = world().rank
        if rank < len(state["rngs"]):  # this process's own stream; a process the writer lacked keeps its new one
            torch.set_rng_state(state["rngs"][rank]["torch_rng"])
            if self.device.type == "cuda":
                torch.cuda.set_rng_state(state["rngs"][rank]["cuda_rng"], self.device)
        self.rows, self.start, self.best = state["rows"], state["step"], state["best"]

    def step(self, step: int) -> dict[str, float]:
        """One optimiser step over ``accumulate`` micro-batches; its log row (the global batch's means)."""
        self.optimizer.zero_grad(set_to_none=True)
        micro, losses, parts = self.train.accumulate, [], []
        for i in range(micro):  # gradient accumulation: micro-batches of batch_size, one optimiser step
            no_sync = getattr(self.objective, "no_sync", None)  # DDP: reduce the gradients once, at the last
            with no_sync() if no_sync is not None and i < micro - 1 else nullcontext():
                with autocast(self.device, self.train.precision):
                    loss, terms = self.objective(step)
                (loss / micro).backward()
            losses.append(loss.item())
            parts.append(terms)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.train.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        means: dict[str, float] = {key: sum(p[key] for p in parts) / micro for key in parts[0]}
        terms = average({"loss": sum(losses) / micro, **means})
        row: dict[str, float] = {
            "step": step,
            "loss": terms.pop("loss"),
            "grad_norm": float(grad_norm),
            "lr": float(self.scheduler.get_last_lr()[0]),
            **terms,
        }
        self.rows.append(row)
        return row

    def validate(self, row: dict[str, float], validate: Callable[[], float]) -> None:
        """Add the validation loss to ``row``; keep the weights if it is the best so far. The loss is averaged
        over processes, so that every process keeps the same weights and stops at the same step."""
        with torch.no_grad(), autocast(self.device, self.train.precision):
            row["val_loss"] = average({"val_loss": validate()})["val_loss"]
        if row["val_loss"] < self.best["loss"]:
            kept = [p.detach().clone() for p in self.trainable]
            self.best = {"loss": row["val_loss"], "parameters": kept, "stale": 0}
        else:
            self.best["stale"] += 1

    def keep_best(self, desc: str) -> None:
        if self.best["parameters"] is not None:
            with torch.no_grad():
                for p, saved in zip(self.trainable, self.best["parameters"], strict=True):
                    p.copy_(saved)
            LOG.info("%s: kept the weights of the best validation loss %.4g", desc, self.best["loss"])


def validation_clips(clips: list[tuple[str, int]], fraction: float, generator: torch.Generator) -> set[tuple[str, int]]:
    """``fraction`` of the training clips ``(segment, tr)``, drawn from ``generator``, held out whole (every
    subject's and repeat's samples of a clip) to validate on: a trainer never trains on them. Nothing is drawn
    when no clip is held out, so the generator's later draws stay as they were."""
    n = round(len(clips) * fraction)
    if not n:
        return set()
    order = torch.randperm(len(clips), generator=generator).tolist()
    return {clips[i] for i in order[:n]}


def validation_loss(items: Sequence[T], batch_size: int, loss: Callable[[Sequence[T]], torch.Tensor]) -> float:
    """The mean of ``loss`` over ``items``, ``batch_size`` at a time, each batch weighed by its size: every
    process of a data-parallel job computes all of it (the validation loss of :func:`fit`)."""
    total = 0.0
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        total += float(loss(batch)) * len(batch)
    return total / len(items)


def start_run(
    module: torch.nn.Module,
    loss_fn: Callable[[int], tuple[torch.Tensor, dict[str, float]]],
    train: TrainConfig,
    generators: Sequence[torch.Generator],
    stateful: Sequence[Stateful],
    device: torch.device,
) -> Run:
    objective = Objective(module, loss_fn)
    trainable = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=train.lr, weight_decay=train.weight_decay)
    return Run(
        data_parallel(objective, device),
        trainable,
        optimizer,
        cosine_with_warmup(optimizer, train.warmup, train.steps),
        generators,
        stateful,
        device,
        train,
    )


def fit(
    module: torch.nn.Module,
    loss_fn: Callable[[int], tuple[torch.Tensor, dict[str, float]]],
    train: TrainConfig,
    desc: str,
    log_tsv: str | Path | None = None,
    log_every: int = 25,
    checkpoint: Checkpoint | None = None,
    generators: Sequence[torch.Generator] = (),
    validate: Callable[[], float] | None = None,
    device: torch.device = torch.device("cpu"),
    stateful: Sequence[Stateful] = (),
) -> pd.DataFrame:
    """Run ``train.steps`` optimiser steps of ``loss_fn(step)`` on ``module``'s trainable parameters and
    return the per-step history.

    ``loss_fn`` draws its own batch for the step from ``generators`` (seeded by the caller) and ``stateful``
    (data streams) and returns the total loss and the named terms to log. ``train`` is the stage's ``train``
    section. With ``checkpoint``, the trainable parameters, optimiser, schedule, history, ``stateful``'s
    ``state_dict()`` and every RNG (``generators`` and torch's global ones, CPU and ``device``'s, which
    dropout uses) are saved every ``train.checkpoint_every`` steps and restored on the next call.
    ``loss_fn`` and ``validate`` run under ``train.precision``'s autocast on ``device`` (where the caller
    placed the model); the backward pass and the optimiser stay in fp32.
    With ``validate`` (the loss on held-out data), it runs every ``train.eval_every`` steps and at the
    end; training stops after ``train.patience`` validations without a new best (0 = never), and the
    best validated weights are the ones left in the model.

    In a data-parallel job (:func:`llm4brain.distributed.launch`) ``loss_fn`` computes its process's share
    of the global batch (see :mod:`llm4brain.distributed`) and ``validate`` the whole validation loss on
    every process, averaged over processes so that all stop together; each process draws its dropout from
    its own stream (:func:`seed_rank`). Only rank 0 writes ``log_tsv`` and checkpoints (with every
    process's RNG state), and every process resumes from them, so a checkpoint written by N processes
    resumes on any number.

    Args:
        module: what is trained (its parameters that require gradients).
        loss_fn: one step's loss and named terms, given the step.
        train: the stage's ``train`` section.
        desc: the stage's name in the log and progress bar.
        log_tsv: where rank 0 writes the history.
        log_every: steps between log lines.
        checkpoint: where the run is saved every ``train.checkpoint_every`` steps and resumed from.
        generators: the caller's seeded generators, checkpointed with the run.
        validate: the validation loss, or None.
        device: where the caller placed the model.
        stateful: data streams whose ``state_dict()`` is checkpointed.

    Returns:
        One row per step: loss, gradient norm, learning rate, the named terms (and val_loss when validated).
    """
    run = start_run(module, loss_fn, train, generators, stateful, device)
    seed_rank(device)
    main = world().main
    if checkpoint:  # a job requeued onto another kind of device starts over: its numerics (and RNGs) differ
        checkpoint = checkpoint.where(device.type, str(autocast_dtype(device, train.precision)))
        state = checkpoint.load()
        if state is not None:
            run.restore(state)
            LOG.info("%s: resuming from step %d (%s)", desc, run.start, checkpoint.path)
    every, steps = train.checkpoint_every, train.steps
    bar = tqdm(range(run.start, steps), desc=desc, mininterval=1.0, initial=run.start, total=steps, disable=not main)
    for step in bar:
        row = run.step(step)
        last = step == steps - 1
        if validate is not None and ((step + 1) % train.eval_every == 0 or last):
            run.validate(row, validate)
        if step % log_every == 0 or last or "val_loss" in row:
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            LOG.info("%s step %d: %s", desc, step, " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "step"))
        if train.patience and run.best["stale"] >= train.patience:
            LOG.info(
                "%s: stopping at step %d, no better validation loss in %d validations (best %.4g)",
                desc,
                step,
                run.best["stale"],
                run.best["loss"],
            )
            break
        if checkpoint and every and (step + 1) % every == 0 and step + 1 < steps:
            rngs = gather_objects(rng_state(device))  # every process takes part; rank 0 writes
            if main:
                checkpoint.save(run.state(step + 1, rngs))
    run.keep_best(desc)
    history = pd.DataFrame(run.rows)
    if main and checkpoint:
        checkpoint.path.unlink(missing_ok=True)
    if main and log_tsv:
        history.to_csv(log_tsv, sep="\t", index=False)
    return history
