"""What the processes of the data-parallel tests run (tests/test_distributed.py): kept apart so that each
process imports only this and the code under test."""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from llm4brain.distributed import BACKENDS, World, gather, world
from llm4brain.sections import TrainConfig

WRITES = ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.truncate", "shutil.rmtree")


def read_only(roots: Sequence[str]) -> Callable[[str, tuple], None]:
    """An audit hook that aborts any write under ``roots`` (files opened for writing, folders made, renames,
    deletions) with an error, which fails the job."""

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            flagged = bool(flags & (os.O_WRONLY | os.O_RDWR))
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else flagged
        elif event in WRITES:
            path, writing = args[0], True
        else:
            return
        if writing and isinstance(path, str | bytes | os.PathLike) and os.fsdecode(path).startswith(tuple(roots)):
            raise PermissionError(f"rank {os.environ['RANK']} wrote {os.fsdecode(path)}: only rank 0 may")

    return hook


def _under(path: Any, roots: Sequence[str]) -> bool:
    return isinstance(path, str | bytes | os.PathLike) and os.fsdecode(path).startswith(tuple(roots))


def refuse_writes(roots: Sequence[str]) -> None:
    """Fail any write under ``roots`` by this process: Python's own (:func:`read_only`) and the writers that
    open files in C or Rust, which no audit hook sees (HDF5, safetensors, torch's checkpoints)."""
    import h5py
    import safetensors.torch

    sys.addaudithook(read_only(roots))

    def refuse(path: Any) -> None:
        if _under(path, roots):
            raise PermissionError(f"rank {os.environ['RANK']} wrote {os.fsdecode(path)}: only rank 0 may")

    h5_open = h5py.File.__init__

    def h5_init(self: h5py.File, name: Any, mode: str = "r", *args: Any, **kwargs: Any) -> None:
        if mode != "r":
            refuse(name)
        h5_open(self, name, mode, *args, **kwargs)

    serialize, save = safetensors.torch.serialize_file, torch.save

    def serialize_file(tensors: Any, filename: Any, *args: Any, **kwargs: Any) -> None:  # save_file / save_model
        refuse(filename)
        serialize(tensors, filename, *args, **kwargs)

    def torch_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        refuse(f)
        save(obj, f, *args, **kwargs)

    h5py.File.__init__ = h5_init  # type: ignore[method-assign]
    safetensors.torch.serialize_file = serialize_file  # type: ignore[assignment]
    torch.save = torch_save  # type: ignore[assignment]


COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "broadcast", "reduce", "reduce_scatter_tensor")


def _tensors(values: Any) -> Iterator[torch.Tensor]:
    for value in values:
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, list | tuple):
            yield from _tensors(value)


def served_only(backend: str, patch: Callable[[Any, str, Any], None] = setattr) -> None:
    """Make every collective fail whose tensor sits on a device that ``backend`` (a process group's backend
    string, e.g. ``"nccl"`` or ``"cpu:gloo,cuda:nccl"``) has no backend for, as NCCL fails a CPU tensor.
    The CPU tests run gloo, which serves anything: declaring a CUDA job's backend here makes them fail
    where a GPU job would."""
    import torch.distributed as dist
    import torch.distributed._functional_collectives as funcol
    from torch.distributed.distributed_c10d import Backend, BackendConfig

    served = BackendConfig(Backend(backend)).get_device_backend_map()

    def checked(name: str, collective: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(collective)
        def call(*args: Any, **kwargs: Any) -> Any:
            for tensor in _tensors([*args, *kwargs.values()]):
                if tensor.device.type not in served:
                    raise RuntimeError(f"{name} of a {tensor.device.type} tensor: {backend} has no backend for it")
            return collective(*args, **kwargs)

        return call

    for name in COLLECTIVES:
        patch(dist, name, checked(name, getattr(dist, name)))
    patch(funcol, "all_gather_single", checked("all_gather_single", funcol.all_gather_single))


def as_rank(target: Callable[..., Any], guard: Sequence[str], kill_rank: int = -1, kill_step: int = -1, **kwargs):
    """``target(**kwargs)`` in a launched process. Its collectives must be served by a CUDA job's process
    group (:func:`served_only`); every rank but 0 may not write under ``guard``; rank ``kill_rank`` SIGKILLs
    itself when its training loop reaches step ``kill_step``."""
    rank = int(os.environ.get("RANK", 0))  # one process: launch runs it in the test's own
    if "RANK" in os.environ:
        served_only(BACKENDS["cuda"])
    if rank != 0:
        refuse_writes(guard)
    if rank == kill_rank:
        from llm4brain.training import Run

        step = Run.step

        def step_or_die(self: Run, at: int) -> dict[str, float]:
            if at == kill_step:
                os.kill(os.getpid(), signal.SIGKILL)  # a GPU falling off the bus, an OOM kill of one process
            return step(self, at)

        Run.step = step_or_die  # type: ignore[method-assign]
    target(**kwargs)


def dies_in_a_collective() -> None:
    """Rank 1 SIGKILLs itself while rank 0 waits for it in a barrier, whose connection then fails at once."""
    if int(os.environ["RANK"]) == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    torch.distributed.barrier()


def gathered_share(x: torch.Tensor) -> None:
    """``x`` (S, B): each process gathers its (S, B / size) share, transposed as the aligner gathers its
    subjects' pooled tokens (a strided tensor: torch's all_gather scrambles its gradient if stacked)."""
    shard = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
    mine = x[:, shard.rank :: shard.size].clone().requires_grad_()
    whole = gather(mine.T).T
    torch.testing.assert_close(whole, x, rtol=0, atol=0)  # the global order, not rank after rank
    weight = torch.arange(x.numel(), dtype=x.dtype).view_as(x)
    (whole * weight).sum().backward()  # every process's copy of one loss
    expected = weight[:, shard.rank :: shard.size] * shard.size  # DDP's average makes it the one-process gradient
    torch.testing.assert_close(mine.grad, expected, rtol=0, atol=0)


def report_world(out: str, checkpoint: Any, train: Any = None) -> None:
    """Check :func:`gathered_share`, the buffer policy and rank 1's write guard, then write this process's
    place, the checkpoint and the typed section it was handed to ``out``/rank{RANK}.json."""
    from llm4brain.training import Objective, data_parallel

    gathered_share(torch.arange(12, dtype=torch.float32).view(2, 6))
    w = world()
    with_statistics = Objective(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3)), lambda _: None)
    refused = "not refused"
    try:  # a module keeping running statistics is refused, not silently kept per process
        data_parallel(with_statistics, torch.device("cpu"))
    except ValueError as err:
        refused = str(err)
    if w.rank == 1:
        refused += "\n" + "\n".join(guarded_writes(Path(out) / "guarded"))
    record = {"size": w.size, "checkpoint": [str(checkpoint.path), checkpoint.fingerprint], "refused": refused}
    record["train"] = [type(train).__name__, train.steps] if train is not None else None
    (Path(out) / f"rank{w.rank}.json").write_text(json.dumps(record))


def guarded_writes(root: Path) -> list[str]:
    """What :func:`refuse_writes` says of each way of writing a file under ``root``."""
    import h5py
    from safetensors.torch import save_file

    root.mkdir()
    refuse_writes([str(root)])
    writes = {
        "h5py": lambda path: h5py.File(path, "a"),
        "safetensors": lambda path: save_file({"x": torch.zeros(1)}, path),
        "torch.save": lambda path: torch.save({}, path),
        "open": lambda path: open(path, "w"),
    }
    said = []
    for name, write in writes.items():
        try:
            write(str(root / name))
            said.append(f"{name} wrote")
        except PermissionError as err:
            said.append(f"{name}: {err}")
    return said


def rank_streams(out: str, steps: int, val_losses: list[list[float]], checkpoint: Any = None) -> None:
    """A tiny ``fit`` with dropout and early stopping, recording what each process drew: the global batch
    (from the shared generator), its dropout masks, and the validation losses rank ``r`` reports
    (``val_losses[r]``, one per step: rank-specific, as bf16 on two GPUs can give)."""
    from llm4brain.runtime import seed_everything
    from llm4brain.training import fit

    seed_everything(5)
    w = world()
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.5), torch.nn.Linear(16, 1))
    generator = torch.Generator().manual_seed(6)
    drawn: dict[int, dict[str, list]] = {}

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        batch = torch.randint(0, 100, (4,), generator=generator)  # the global batch: every process's
        hidden = model[1](model[0](w.share(batch).float()[:, None].repeat(1, 4) / 100))
        drawn[step] = {"batch": batch.tolist(), "mask": (hidden != 0).int().tolist()}
        return model[2](hidden).pow(2).mean(), {}

    params = {
        "accumulate": 1,
        "precision": "fp32",
        "grad_clip": 1.0,
        "lr": 1e-2,
        "weight_decay": 0.0,
        "warmup": 1,
        "steps": steps,
        "checkpoint_every": 2,
        "eval_every": 1,
        "patience": 1,
    }
    history = fit(
        model,
        loss_fn,
        TrainConfig.from_dict(params),
        "rank_streams",
        checkpoint=checkpoint,
        generators=[generator],
        validate=lambda: val_losses[w.rank][max(drawn)],  # the step's
    )
    record = {"steps": history["step"].tolist(), "val_loss": history["val_loss"].tolist(), "drawn": drawn}
    (Path(out) / f"rank{w.rank}.json").write_text(json.dumps(record))


def report_environment(out: str, name: str) -> None:
    """Write the variable ``name`` as this process sees it, and which processes imported this module."""
    rank = os.environ["RANK"]
    Path(out, f"rank{rank}.json").write_text(json.dumps({"value": os.environ.get(name), "importer": IMPORTER}))


IMPORTER = os.getpid()  # the process that imported this module: the server the processes fork from
