"""Data-parallel training: one rule's job runs ``train.devices`` processes (torch.distributed, launched by
torch's elastic agent, the engine behind ``torchrun``), each on its share of every global batch.

Why the result does not depend on the number of processes: every process draws the same global batch (the
same seeded generators) and keeps the samples at positions ``rank, rank + size, ...``
(:meth:`World.share`); DDP averages the gradients. A loss that is a mean over equal per-sample shares
(masked reconstruction, token MSE) then has the one-process gradient as it is. A loss that couples the
samples of a batch (InfoNCE, MMD, cross-subject distances) is computed on the batch gathered from every
process (:func:`gather`, whose backward returns each process its share of the gradient), and a mean over a
varying number of items (caption tokens) divides by their count over all processes (:func:`global_mean`).
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llm4brain.runtime import LOG, select_device, setup_logging

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class World:
    """This process's place among the job's processes: ``rank`` of ``size`` (``local_rank`` on its node)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes the artifacts, the training log and the checkpoints."""
        return self.rank == 0

    def share(self, batch: Any) -> Any:
        """This process's samples of a global batch (a tensor or a sequence): positions rank, rank + size, ..."""
        return batch[self.rank :: self.size]


def world() -> World:
    """The running job's :class:`World`: set up by :func:`launch`'s workers, one process otherwise."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def gather(x: torch.Tensor) -> torch.Tensor:
    """The global batch from every process's share ``x`` (k, ...), in the global order (the inverse of
    :meth:`World.share`). Differentiable: each process gets back the gradient of its own share, summed
    over every process's copy of the loss, which DDP's averaging turns into the one-process gradient."""
    import torch
    import torch.distributed as dist

    w = world()
    if w.size == 1:
        return x
    if x.requires_grad:
        import torch.distributed.nn.functional as dist_nn

        parts = list(dist_nn.all_gather(x.contiguous()))
    else:
        parts = [torch.empty_like(x) for _ in range(w.size)]
        dist.all_gather(parts, x.contiguous())
    # rank r's i-th sample is global position i * size + r. Reordered by an index, not torch.stack(parts, 1):
    # all_gather's backward over gloo scrambles strided gradients, and stack's would be strided (torch 2.14)
    order = torch.arange(len(x) * w.size, device=x.device).view(w.size, len(x)).T.flatten()
    return torch.cat(parts)[order]


def global_mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """``total / count`` over every process: this process's ``total`` (with its gradient) divided by the
    count summed over processes, times their number (DDP averages the gradients of the processes' means)."""
    import torch.distributed as dist

    w = world()
    if w.size == 1:
        return total / count.clamp(min=1)
    count = count.detach().float().clone()
    dist.all_reduce(count)
    return total * w.size / count.clamp(min=1)


def average(values: dict[str, float]) -> dict[str, float]:
    """Logged numbers averaged over processes: the global batch's (each process logs its share's mean)."""
    import torch
    import torch.distributed as dist

    w = world()
    if w.size == 1:
        return values
    stacked = torch.tensor(list(values.values()), dtype=torch.float64)
    dist.all_reduce(stacked)
    return dict(zip(values, (stacked / w.size).tolist(), strict=True))


def launch(
    entry: Callable[..., Any], *, devices: int, device: str = "auto", log_file: str | None = None, **kwargs: Any
) -> None:
    """Run ``entry(**kwargs)`` in ``devices`` processes (in this one when 1), as ``torchrun`` would: over NCCL
    when ``device`` (a ``train.device``) resolves to CUDA, each process on its own GPU, else over gloo.

    On one node the processes meet on a free localhost port. Under a SLURM allocation of several nodes
    (``SLURM_NNODES`` > 1), this is run once per node (one ``srun`` task each) and the nodes meet at the
    first node of the allocation. If a process dies, the others are stopped and this raises (no process
    waits on a dead peer); the next run resumes from rank 0's last checkpoint. ``kwargs`` must pickle.
    """
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(
            "launch() ran while a worker process imported the main script: call it under "
            "`if __name__ == '__main__':` (a worker re-imports the script it was started from)"
        )
    nodes = int(os.environ.get("SLURM_NNODES", 1))
    if devices * nodes == 1:
        entry(**kwargs)
        return
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nodes > 1:
        run_id, endpoint = os.environ["SLURM_JOB_ID"], f"{first_node()}:{os.environ.get('LLM4BRAIN_PORT', 29500)}"
    else:
        run_id, endpoint = uuid.uuid4().hex, "localhost:0"
    config = LaunchConfig(
        min_nodes=nodes,
        max_nodes=nodes,
        nproc_per_node=devices,
        run_id=run_id,
        rdzv_backend="c10d",
        rdzv_endpoint=endpoint,
        max_restarts=0,  # a dead process fails the job; Snakemake's rerun resumes it
        monitor_interval=1.0,
    )
    name = getattr(entry, "__name__", str(entry))
    LOG.info("%s: %d processes on each of %d node(s) (rendezvous %s)", name, devices, nodes, endpoint)
    try:
        elastic_launch(config, _worker)(entry, select_device(device).type == "cuda", log_file, kwargs)
    except ChildFailedError as err:
        failures = "; ".join(
            f"rank {rank} (pid {failure.pid}) {_exit(failure.exitcode)}" for rank, failure in err.failures.items()
        )
        raise RuntimeError(
            f"{name}: {failures}; the other processes were stopped. Rerun to resume from the last checkpoint"
            + (f" (details in {log_file})" if log_file else "")
        ) from None


def _exit(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def first_node() -> str:
    """The first host of the SLURM allocation (the rendezvous of a multi-node job)."""
    import subprocess

    hosts = subprocess.run(
        ["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]], capture_output=True, text=True, check=True
    )
    return hosts.stdout.split()[0]


def _worker(entry: Callable[..., Any], cuda: bool, log_file: str | None, kwargs: dict[str, Any]) -> None:
    """One process of a launched job: join the process group, log to the job's log with its rank, run."""
    import torch
    import torch.distributed as dist

    setup_logging(log_file, rank=int(os.environ["RANK"]))
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        entry(**kwargs)
    finally:
        dist.destroy_process_group()
