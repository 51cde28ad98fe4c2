"""Process-level set-up shared by every stage: logging to the rule's log file, memory reuse, seeding, device choice."""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from types import TracebackType

    import torch

LOG = logging.getLogger("llm4brain")
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc mallopt parameters (malloc.h)


def setup_logging(log_file: str | os.PathLike | None = None, process: str | None = None) -> logging.Logger:
    """Log to stderr and, when given, to ``log_file`` (Snakemake's per-job log). A process of a data-parallel
    job (``process``: "rank 1", "node 0") appends to the log its launcher started, its lines marked.

    Called first in every job's process, after its imports, so it also freezes what they made (``gc.freeze``):
    torch, transformers and timm leave about half a million objects that live until exit, which the cyclic
    collector would otherwise walk at every full collection and once more at exit (about 1 s per job here)."""
    gc.freeze()
    LOG.setLevel(logging.INFO)
    LOG.handlers.clear()
    where = "" if process is None else f"{process} "
    fmt = logging.Formatter(f"%(asctime)s {where}%(levelname)s %(message)s", "%H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w" if process is None else "a"))
    for handler in handlers:
        handler.setFormatter(fmt)
        LOG.addHandler(handler)
    sys.excepthook = _log_uncaught
    if "SLURM_JOB_ID" in os.environ:  # where a cluster job ran, for the user chasing a failure
        LOG.info(
            "SLURM_JOB_ID=%s node=%s CUDA_VISIBLE_DEVICES=%s HDF5_USE_FILE_LOCKING=%s",
            *(
                os.environ.get(k, "unset")
                for k in ("SLURM_JOB_ID", "SLURMD_NODENAME", "CUDA_VISIBLE_DEVICES", "HDF5_USE_FILE_LOCKING")
            ),
        )
    return LOG


def keep_freed_memory() -> None:
    """Have glibc keep freed memory for the next allocation instead of unmapping it, in a job that runs a
    model batch after batch. By default every buffer over 128 KB-32 MB is mapped fresh from the kernel and
    unmapped when freed, so the activations are page-faulted in again at every batch; the price of keeping
    them is peak resident memory (freed buffers are reused rather than returned). benchmarks/video.py prints
    both for the bare forward. No effect off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(M_MMAP_MAX, 0)  # large buffers come from the heap too, where freed ones are reused
    libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)  # and the heap's free top is not handed back


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    """Put the traceback of a failing job into its log file, where Snakemake points the user."""
    LOG.critical("%s: %s", kind.__name__, value, exc_info=(kind, value, tb))


CUBLAS_WORKSPACE = ":4096:8"  # what cuBLAS needs to be deterministic (CUDA 10.2+; torch's reproducibility notes)


def seed_everything(seed: int, threads: int | None = None) -> None:
    """Seed python, numpy and torch, and make torch deterministic so reruns on one machine are identical.
    On CUDA that needs ``CUBLAS_WORKSPACE_CONFIG`` before cuBLAS starts: set here unless the user set it."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(threads)


def select_device(requested: str = "auto") -> torch.device:
    """CUDA when present (or requested), CPU otherwise; a process of a data-parallel job gets its own GPU."""
    import torch

    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``precision``: ``auto`` is bf16 on CUDA devices that support it and full
    precision elsewhere (CPU runs stay bit-reproducible); ``bf16`` forces it (CPU autocast included);
    ``fp32`` never autocasts."""
    import torch

    if precision == "bf16" or (precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return None


def autocast(device: torch.device, precision: str = "auto") -> torch.autocast:
    """The ``torch.autocast`` context for ``device`` and ``precision`` (disabled when full precision)."""
    import torch

    dtype = autocast_dtype(device, precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
