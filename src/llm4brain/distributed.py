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

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm4brain import entries
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
    from torch.distributed._functional_collectives import all_gather_single

    w = world()
    if w.size == 1:
        return x
    ranked = all_gather_single(x.contiguous(), 0, dist.group.WORLD)  # type: ignore[arg-type]  # rank 0's share, then rank 1's, ...
    # rank r's i-th sample is global position i * size + r
    order = torch.arange(len(x) * w.size, device=x.device).view(w.size, len(x)).T.flatten()
    return ranked[order]


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
    """Numbers averaged over processes, equal to the last bit on every process: each process's values are
    gathered (exact copies) and every process sums them in rank order. Logged means (each process logs its
    share's) and every number a decision depends on (early stopping's validation loss) go through here,
    so that no process decides alone."""
    import torch
    import torch.distributed as dist

    w = world()
    if w.size == 1:
        return values
    mine = torch.tensor(list(values.values()), dtype=torch.float64)  # on the CPU: served by gloo (BACKENDS)
    every = [torch.empty_like(mine) for _ in range(w.size)]
    dist.all_gather(every, mine)
    return dict(zip(values, (torch.stack(every).sum(0) / w.size).tolist(), strict=True))


def gather_objects(value: Any) -> list[Any]:
    """Every process's ``value`` (picklable: RNG states for a checkpoint), in rank order; ``[value]`` alone."""
    import torch.distributed as dist

    w = world()
    if w.size == 1:
        return [value]
    every: list[Any] = [None] * w.size
    dist.all_gather_object(every, value)
    return every


BACKENDS = {"cpu": "gloo", "cuda": "cpu:gloo,cuda:nccl"}
"""The process group's backend for each training device type. NCCL serves CUDA tensors only
(``Backend.backend_capability``), so a CUDA job's group also has gloo for CPU tensors: a collective on a
CPU tensor (a logged number, an RNG state) goes to gloo, one on a CUDA tensor to NCCL."""


Entry = Callable[..., Any] | str
"""What :func:`launch` runs: a function, or its ``"module:function"`` reference (:mod:`llm4brain.entries`), which
the launching process does not import (only the processes that run it do)."""
START_METHOD = "forkserver"
"""How :func:`launch` starts a job's processes (``benchmarks/ddp.py --launches`` sets ``"spawn"`` to compare)."""


def launch(
    entry: Entry,
    *,
    devices: int,
    device: str = "auto",
    log_file: str | None = None,
    timeout: float | None = None,
    **kwargs: Any,
) -> None:
    """Run ``entry(**kwargs)`` in ``devices`` processes (in this one when 1), as ``torchrun`` would: over NCCL
    when ``device`` (a ``train.device``) resolves to CUDA, each process on its own GPU, else over gloo.

    The processes fork from one server (multiprocessing's ``forkserver``, started at this process's first
    launch) that has imported the entry's module: spawned, each would import torch and the model stack again,
    seconds of CPU each. The server imports it as a new interpreter would (installed packages,
    ``PYTHONPATH``); a module it cannot import, each process imports itself. With ``entry`` as
    ``"module:function"`` this process does not import it at all. Each process runs with this process's
    environment as it is at the call, and imports the calling script again (hence the
    ``if __name__ == "__main__":`` guard of a script that calls this). A reference that names no module or
    function fails here, before any process starts (:func:`llm4brain.entries.check`).

    On one node the processes meet on a free localhost port. In a SLURM allocation of several nodes
    (``SLURM_NNODES`` > 1) it starts itself once per node with ``srun`` (:func:`on_every_node`) and the
    nodes meet at the allocation's first node. If a process dies, the others are stopped and this raises
    (no process waits on a dead peer); the next run resumes from rank 0's last checkpoint. ``kwargs`` must
    pickle (and, across nodes, be JSON with :class:`~llm4brain.resume.Checkpoint` and typed config
    section values). ``timeout`` (seconds) bounds how long a collective waits for the other processes
    (torch's default when None).
    """
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(
            "launch() ran while a worker process imported the main script: call it under "
            "`if __name__ == '__main__':` (a worker re-imports the script it was started from)"
        )
    if isinstance(entry, str):
        entries.check(entry)
    nodes = int(os.environ.get("SLURM_NNODES", 1))
    if nodes > 1 and NODE not in os.environ:
        on_every_node(
            entry, nodes=nodes, devices=devices, device=device, log_file=log_file, timeout=timeout, kwargs=kwargs
        )
        return
    if devices * nodes == 1:
        resolve(entry)(**kwargs)
        return
    device_type = select_device(device).type
    if device_type not in BACKENDS:
        raise ValueError(f"data-parallel training runs on {' or '.join(BACKENDS)} devices, not {device_type}")
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
        monitor_interval=MONITOR_INTERVAL,
        start_method=START_METHOD,
    )
    module, _, name = entry_reference(entry).partition(":")  # a string entry is checked above
    multiprocessing.set_forkserver_preload([module])  # read when the server starts
    LOG.info("%s: %d processes on each of %d node(s) (rendezvous %s)", name, devices, nodes, endpoint)
    try:
        elastic_launch(config, _worker)(entry, device_type, log_file, timeout, dict(os.environ), kwargs)
    except ChildFailedError as err:
        failures = "; ".join(
            f"rank {rank} (pid {failure.pid}) {_exit(failure.exitcode)}" for rank, failure in err.failures.items()
        )
        raise RuntimeError(
            f"{name}: {failures}; the other processes were stopped. Rerun to resume from the last checkpoint"
            + (f" (details in {log_file})" if log_file else "")
        ) from None


_IMPORT_ENVIRONMENT = dict(os.environ)  # in a launched process: the server's, before the launcher's variables
NODE = "LLM4BRAIN_NODE"  # set in the one process per node that a multi-node launch starts
# seconds between the launcher's checks of its processes; a process that fails waits two of them before it exits
# (:func:`_worker`)
MONITOR_INTERVAL = 1.0


def on_every_node(
    entry: Entry,
    *,
    nodes: int,
    devices: int,
    device: str,
    log_file: str | None,
    timeout: float | None,
    kwargs: dict[str, Any],
) -> None:
    """Run this launch once on each node of the SLURM allocation (``srun``, one task per node) and wait.
    Snakemake's SLURM plugin starts a job's script once, on its first node: with the ``mpi`` resource it
    does so outside any job step, so this ``srun`` may take the whole allocation."""
    folder = Path(log_file).parent if log_file else Path.cwd()  # shared by the nodes, as the results are
    reference = entry_reference(entry)
    with tempfile.NamedTemporaryFile("w", suffix=".launch.json", dir=folder, delete=False) as f:
        f.write(launch_spec(entry, devices=devices, device=device, log_file=log_file, timeout=timeout, kwargs=kwargs))
    command = ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    LOG.info("%s: starting %d processes on each of %d nodes: %s", reference, devices, nodes, " ".join(command))
    try:
        done = subprocess.run(
            [*command, sys.executable, "-m", "llm4brain.distributed", f.name], env={**os.environ, NODE: "1"}
        )
    finally:
        os.unlink(f.name)
    if done.returncode:
        raise RuntimeError(
            f"{reference}: a node's processes failed (srun exited with {done.returncode}); the other nodes' "
            "were stopped. Rerun to resume from the last checkpoint" + (f" (details in {log_file})" if log_file else "")
        )


def launch_spec(
    entry: Entry, *, devices: int, device: str, log_file: str | None, timeout: float | None, kwargs: dict[str, Any]
) -> str:
    """A :func:`launch` as the JSON text :func:`run_spec` reads (``python -m llm4brain.distributed <file>``).

    Args:
        entry: the function, or its ``"module:function"`` reference.
        devices: processes per node.
        device: the ``train.device`` they train on.
        log_file: the job's log, or None.
        timeout: seconds a collective waits, or None.
        kwargs: the entry's arguments: JSON, :class:`~llm4brain.resume.Checkpoint`, typed config sections
            and paths.

    Returns:
        The launch as one JSON object.
    """
    spec = {"entry": entry_reference(entry), "devices": devices, "device": device, "timeout": timeout}
    return json.dumps({**spec, "log_file": log_file, "kwargs": kwargs}, default=_to_json)


def _to_json(value: Any) -> Any:
    from llm4brain.resume import Checkpoint
    from llm4brain.section import Section

    if isinstance(value, Checkpoint):
        return {"__checkpoint__": [str(value.path), value.fingerprint]}
    if isinstance(value, Section):  # a typed config section: its class and its keys
        return {"__section__": type(value).__name__, "keys": value.to_dict()}
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} cannot reach the other nodes: {value!r}")


def _from_json(value: dict[str, Any]) -> Any:
    from llm4brain import sections
    from llm4brain.resume import Checkpoint

    if "__section__" in value:
        return getattr(sections, value["__section__"]).from_dict(value["keys"])
    return Checkpoint(*value["__checkpoint__"]) if "__checkpoint__" in value else value


def run_spec(path: str) -> None:
    """One node's part of :func:`on_every_node`: the launch written to ``path``."""
    spec = json.loads(Path(path).read_text(), object_hook=_from_json)
    setup_logging(spec["log_file"], process=f"node {os.environ.get('SLURM_NODEID', 0)}")
    launch(
        spec["entry"],
        devices=spec["devices"],
        device=spec["device"],
        log_file=spec["log_file"],
        timeout=spec["timeout"],
        **spec["kwargs"],
    )


def _exit(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def first_node() -> str:
    """The first host of the SLURM allocation (the rendezvous of a multi-node job)."""
    hosts = subprocess.run(
        ["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]], capture_output=True, text=True, check=True
    )
    return hosts.stdout.split()[0]


def entry_reference(entry: Entry) -> str:
    """``entry`` as ``"module:function"``."""
    return entry if isinstance(entry, str) else f"{entry.__module__}:{entry.__qualname__}"


def resolve(entry: Entry) -> Callable[..., Any]:
    """The function ``entry`` names (a function is itself)."""
    return entries.load(entry) if isinstance(entry, str) else entry


def _worker(
    entry: Entry,
    device_type: str,
    log_file: str | None,
    timeout: float | None,
    environment: dict[str, str],
    kwargs: dict[str, Any],
) -> None:
    """One process of a launched job: take the launching process's environment, join the process group
    (:data:`BACKENDS`), log to the job's log with its rank, run."""
    import datetime

    import torch
    import torch.distributed as dist

    # A forked process starts with the environment the server had when it imported this module (the first
    # launch's): take this launch's, with what the launcher set for this process (RANK, MASTER_PORT, ...).
    launcher = {k: v for k, v in os.environ.items() if _IMPORT_ENVIRONMENT.get(k) != v}
    os.environ.clear()
    os.environ.update({**environment, **launcher})
    setup_logging(log_file, process=f"rank {os.environ['RANK']}")
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    wait = None if timeout is None else datetime.timedelta(seconds=timeout)
    dist.init_process_group(BACKENDS[device_type], timeout=wait)
    try:
        resolve(entry)(**kwargs)
    except Exception:
        # When a process dies (an OOM kill), the others fail at once in their next collective. The launcher
        # reports the first dead process it finds at a check, in rank order, so a failed process waits until
        # the launcher has checked twice: the process that died first, the cause, is the one reported.
        time.sleep(2 * MONITOR_INTERVAL)
        raise
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    run_spec(sys.argv[1])
