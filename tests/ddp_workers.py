"""What the processes of the data-parallel tests run (tests/test_distributed.py): kept apart so that each
process imports only this and the code under test."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from llm4brain.distributed import World, gather

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


def as_rank(target: Callable[..., Any], guard: Sequence[str], kill_rank: int = -1, kill_step: int = -1, **kwargs):
    """``target(**kwargs)`` in a launched process. Every rank but 0 may not write under ``guard``; rank
    ``kill_rank`` SIGKILLs itself when its training loop reaches step ``kill_step``."""
    rank = int(os.environ.get("RANK", 0))  # one process: launch runs it in the test's own
    if rank != 0:
        sys.addaudithook(read_only(guard))
    if rank == kill_rank:
        from llm4brain.training import Run

        step = Run.step

        def step_or_die(self: Run, at: int) -> dict[str, float]:
            if at == kill_step:
                os.kill(os.getpid(), signal.SIGKILL)  # a GPU falling off the bus, an OOM kill of one process
            return step(self, at)

        Run.step = step_or_die  # type: ignore[method-assign]
    target(**kwargs)


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


def report_world(out: str, checkpoint: Any) -> None:
    """Check :func:`gathered_share`, then write this process's place and the checkpoint it was handed to
    ``out``/rank{RANK}.json."""
    import json

    from llm4brain.distributed import world

    gathered_share(torch.arange(12, dtype=torch.float32).view(2, 6))
    w = world()
    record = {"size": w.size, "checkpoint": [str(checkpoint.path), checkpoint.fingerprint]}
    (Path(out) / f"rank{w.rank}.json").write_text(json.dumps(record))
