"""The shared training loop: a job killed with SIGKILL resumes from its checkpoint and ends bit-identical."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TRAIN_DEFAULTS

from llm4brain.resume import Checkpoint
from llm4brain.runtime import autocast_dtype
from llm4brain.sections import TrainConfig
from llm4brain.training import fit

TRAIN = {
    **TRAIN_DEFAULTS,
    "steps": 30,
    "batch_size": 8,
    "lr": 3e-3,
    "weight_decay": 0.01,
    "warmup": 5,
    "grad_clip": 1.0,
    "threads": 1,
    "checkpoint_every": 4,
    "accumulate": 1,
}

SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import torch
    from safetensors.torch import save_file
    from llm4brain.runtime import seed_everything
    from llm4brain.resume import Checkpoint
    from llm4brain.sections import TrainConfig
    from llm4brain.training import fit

    out, kill_at = sys.argv[1], int(sys.argv[2])
    seed_everything(0, 1)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.GELU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 1))
    x, y = torch.randn(64, 6), torch.randn(64, 1)
    generator = torch.Generator().manual_seed(1)

    def loss_fn(step):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # what a cluster does at a time limit, mid-epoch
        idx = torch.randint(64, (8,), generator=generator)
        return torch.nn.functional.mse_loss(model(x[idx]), y[idx]), {}

    fit(model, loss_fn, TrainConfig.from_dict(PARAMS), "toy", out + ".tsv", checkpoint=Checkpoint(CKPT, "toy-job"),
        generators=[generator])
    save_file(model.state_dict(), out + ".safetensors")
""")


def run(tmp_path: Path, out: str, kill_at: int = -1) -> int:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.replace("PARAMS", repr(TRAIN)).replace("CKPT", repr(str(tmp_path / "toy.pt"))))
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path / out), str(kill_at)], capture_output=True, text=True
    ).returncode


def test_sigkill_then_rerun_resumes_and_ends_bit_identical(tmp_path):
    from safetensors.torch import load_file

    assert run(tmp_path, "straight") == 0
    assert run(tmp_path, "killed", kill_at=13) == -9
    assert (tmp_path / "toy.pt").exists() and not (tmp_path / "killed.safetensors").exists()
    assert torch.load(tmp_path / "toy.pt", weights_only=True)["step"] == 12
    assert run(tmp_path, "killed") == 0
    assert not (tmp_path / "toy.pt").exists()  # a finished job leaves no state behind
    straight, resumed = load_file(tmp_path / "straight.safetensors"), load_file(tmp_path / "killed.safetensors")
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "straight.tsv", sep="\t"), pd.read_csv(tmp_path / "killed.tsv", sep="\t")
    )


def test_state_of_another_job_is_not_resumed(tmp_path):
    stale = Checkpoint(tmp_path / "toy.pt", "some-other-job")
    stale.save({"step": 12})
    assert Checkpoint(tmp_path / "toy.pt", "toy-job").load() is None
    assert stale.load()["step"] == 12


def test_fingerprint_follows_params_and_inputs(tmp_path):
    data = tmp_path / "features.h5"
    data.write_bytes(b"x")
    base = Checkpoint.for_job("rule", [str(data)], {"steps": 5}, root=tmp_path)
    assert base == Checkpoint.for_job("rule", [str(data)], {"steps": 5}, root=tmp_path)
    assert base.path == tmp_path / ".resume" / "rule.pt"
    assert base.fingerprint != Checkpoint.for_job("rule", [str(data)], {"steps": 6}, root=tmp_path).fingerprint
    same_job = Checkpoint.for_job("rule", [str(data)], {"steps": 5}, root=tmp_path)
    assert same_job.where("cpu") == base.where("cpu") and base.where("cpu").path == base.path  # a rerun finds it
    assert len({base.fingerprint, base.where("cpu").fingerprint, base.where("cuda:0").fingerprint}) == 3
    os.utime(data, ns=(1, 1))
    assert base.fingerprint != Checkpoint.for_job("rule", [str(data)], {"steps": 5}, root=tmp_path).fingerprint


def test_training_state_is_kept_per_device(tmp_path):
    """fit keys its state by the kind of device and the autocast dtype it ran with: a job that a cluster
    requeues from a GPU node onto a CPU one starts over rather than resuming bf16 state (whose CUDA RNG
    state a CPU run cannot restore)."""
    from llm4brain.training import fit

    checkpoint, model = Checkpoint(tmp_path / "toy.pt", "toy-job"), torch.nn.Linear(3, 1)
    params = {**TRAIN, "steps": 5, "checkpoint_every": 2}

    def preempted_at_step_3(step):
        if step == 3:
            raise RuntimeError("preempted")
        return model(torch.ones(2, 3)).square().mean(), {}

    with pytest.raises(RuntimeError, match="preempted"):
        fit(model, preempted_at_step_3, TrainConfig.from_dict(params), "toy", checkpoint=checkpoint)
    saved = torch.load(checkpoint.path, weights_only=True)
    assert saved["step"] == 2 and saved["fingerprint"] == checkpoint.where("cpu", "None").fingerprint
    checkpoint.where("cuda", "torch.bfloat16").save({"step": 4})  # what the job would leave on a GPU node
    history = fit(
        model,
        lambda step: (model(torch.ones(2, 3)).square().mean(), {}),
        TrainConfig.from_dict(params),
        "toy",
        checkpoint=checkpoint,
    )
    assert len(history) == 5 and not checkpoint.path.exists()


def test_accumulated_micro_batches_make_one_step_on_their_union():
    from llm4brain.training import fit

    torch.manual_seed(0)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    accumulated = torch.nn.Linear(3, 1)
    whole = torch.nn.Linear(3, 1)
    whole.load_state_dict(accumulated.state_dict())
    params = {**TRAIN, "steps": 1, "grad_clip": 1e6, "checkpoint_every": 0, "accumulate": 2}
    halves = iter([slice(0, 4), slice(4, 8)])

    def half(step):
        rows = next(halves)
        return torch.nn.functional.mse_loss(accumulated(x[rows]), y[rows]), {}

    history = fit(accumulated, half, TrainConfig.from_dict(params), "accumulated")
    fit(
        whole,
        lambda step: (torch.nn.functional.mse_loss(whole(x), y), {}),
        TrainConfig.from_dict({**params, "accumulate": 1}),
        "whole",
    )
    torch.testing.assert_close(accumulated.weight, whole.weight)
    torch.testing.assert_close(accumulated.bias, whole.bias)
    assert len(history) == 1


def test_validation_stops_early_and_keeps_the_best_weights():
    """Training pulls w toward 1 while the validation loss wants 0.3: validation improves, then worsens;
    with patience 2 the run stops early and w is left at its best validated value."""
    w = torch.nn.Parameter(torch.tensor(-1.0))
    seen: list[tuple[int, float, float]] = []

    def validate() -> float:
        seen.append((len(seen), w.item(), (w.item() - 0.3) ** 2))
        return seen[-1][2]

    params = {
        **TRAIN_DEFAULTS,
        "steps": 200,
        "lr": 0.05,
        "warmup": 0,
        "weight_decay": 0.0,
        "checkpoint_every": 0,
        "eval_every": 5,
        "patience": 2,
    }
    history = fit(
        torch.nn.ParameterList([w]),
        lambda step: ((w - 1.0) ** 2, {}),
        TrainConfig.from_dict(params),
        "val",
        validate=validate,
    )
    best = min(seen, key=lambda s: s[2])
    assert len(history) < 200 and history["val_loss"].notna().sum() == len(seen) == best[0] + 3
    assert w.item() == best[1] and abs(best[1] - 0.3) < 0.1


def test_precision_setting_picks_the_autocast():
    """``auto`` autocasts only on a CUDA device with bf16 (CPU runs stay bit-reproducible); ``bf16`` forces it."""
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "auto") is None and autocast_dtype(cpu, "fp32") is None
    assert autocast_dtype(cpu, "bf16") == torch.bfloat16
    seen = {}
    model = torch.nn.Linear(4, 1)

    def loss_fn(step):
        out = model(torch.ones(2, 4))
        seen[step] = out.dtype
        return out.float().pow(2).mean(), {}

    for precision, dtype in [("auto", torch.float32), ("bf16", torch.bfloat16)]:
        fit(
            model,
            loss_fn,
            TrainConfig.from_dict({**TRAIN, "steps": 2, "checkpoint_every": 0, "precision": precision}),
            "p",
        )
        assert set(seen.values()) == {dtype} and model.weight.dtype == torch.float32


def test_stateful_objects_are_checkpointed_and_restored(tmp_path):
    """What ``stateful`` holds (a data stream's position) is saved with each checkpoint and restored on the
    rerun, so the rerun draws what the killed run would have drawn next."""

    class Position:
        def __init__(self) -> None:
            self.drawn = 0

        def state_dict(self) -> dict[str, int]:
            return {"drawn": self.drawn}

        def load_state_dict(self, state: dict[str, int]) -> None:
            self.drawn = state["drawn"]

    model, checkpoint = torch.nn.Linear(3, 1), Checkpoint(tmp_path / "toy.pt", "toy-job")
    params = {**TRAIN, "steps": 6, "checkpoint_every": 2}
    seen: list[int] = []

    def loss_fn(step, position, fail_at=None):
        if step == fail_at:
            raise RuntimeError("preempted")
        position.drawn += 1
        seen.append(position.drawn)
        return model(torch.ones(2, 3)).square().mean(), {}

    killed = Position()
    with pytest.raises(RuntimeError, match="preempted"):
        fit(
            model,
            lambda step: loss_fn(step, killed, fail_at=5),
            TrainConfig.from_dict(params),
            "toy",
            checkpoint=checkpoint,
            stateful=[killed],
        )
    assert torch.load(checkpoint.path, weights_only=True)["stateful"] == [{"drawn": 4}]
    seen.clear()
    rerun = Position()
    fit(
        model,
        lambda step: loss_fn(step, rerun),
        TrainConfig.from_dict(params),
        "toy",
        checkpoint=checkpoint,
        stateful=[rerun],
    )
    assert seen == [5, 6]


def test_a_jobs_imports_are_frozen_for_the_garbage_collector(tmp_path):
    """setup_logging, the first call of every job, freezes the objects its imports made (``gc.freeze``), so the
    collector skips them during the job and at its exit; the log file still receives the job's lines."""
    log = tmp_path / "job.log"
    script = f"import gc, torch\nfrom llm4brain.runtime import setup_logging\nsetup_logging({str(log)!r}).info('hi')\n"
    script += "print(gc.get_freeze_count())"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert int(run.stdout) > 10_000 and log.read_text().endswith("INFO hi\n")
