"""Data-parallel training on CPU (gloo): two processes train the model one process trains, from the same
global batches; only rank 0 writes; a dead process fails the job fast; a checkpoint written by two
processes resumes on two (bit-identical) and on one; each process draws its own dropout; every process
stops at the same step. Every collective of the launched processes must be one a CUDA job's process group
serves (``ddp_workers.served_only``), so gloo's leniency hides no NCCL failure."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import DEFAULTS
from ddp_workers import as_rank, dies_in_a_collective, rank_streams, report_world, served_only
from safetensors.torch import load_file
from test_models import CAPTIONS
from test_stream import ENCODER, SCMBM, SUBJECTS, adaptor_inputs, adaptor_outputs, runs, typed, write_fmri

from llm4brain.align.train import train_brain_aligner
from llm4brain.artifacts import atomic_h5, write_keys, write_strings
from llm4brain.distributed import BACKENDS, launch
from llm4brain.instruct.train import instruct_llm
from llm4brain.resume import Checkpoint
from llm4brain.scmbm.train import pretrain_scmbm
from llm4brain.sections import EncoderConfig, InstructConfig, ScmbmConfig, TrainConfig

TOL = 3e-4  # per tensor: max-abs difference / the tensor's own max-abs value


def shift_invariant(name: str, value: torch.Tensor) -> torch.Tensor:
    """``value`` without the attention key biases: softmax ignores a shift of every key, so their exact
    gradient is zero and Adam turns its rounding noise into steps of ~lr · noise / eps that differ between
    any two summation orders without changing any output (measured: 2.3e-4 of the fused qkv bias's scale
    after SC-MBM's 10 steps, 1.8e-4 in the aligner's 6)."""
    if name.endswith("qkv.bias"):  # timm's fused [query | key | value]
        n = len(value) // 3
        return torch.cat([value[:n], value[2 * n :]])
    return value[:0] if name.endswith("key.bias") else value


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    """Every tensor's max-abs difference within TOL of that tensor's own max-abs value, so a small tensor
    (an adaptor's 1e-3 scale) is held to its own size, not the model's largest weight. TOL is rounding:
    Adam divides near-zero gradients by their own size, summation order included (largest measured 9.7e-5,
    an adaptor scale); a share, sync or count bug moves weights by 1e-3 or more of their scale."""
    assert a.keys() == b.keys()
    for name in a:
        x, y = (shift_invariant(name, t.float()) for t in (a[name], b[name]))
        scale = x.abs().max() if x.numel() else 0
        if scale:
            assert (x - y).abs().max() <= TOL * scale, f"{what}: {name} differs by {(x - y).abs().max() / scale:.2e}"
        else:
            assert torch.equal(x, y), f"{what}: {name} (all zero in one run) differs"


def assert_same_curve(a: Path, b: Path) -> None:
    x, y = (pd.read_csv(path, sep="\t") for path in (a, b))
    assert list(x.columns) == list(y.columns) and len(x) == len(y)
    for column in x.columns.drop(["grad_norm"]):  # the norm of near-zero gradients is rounding noise too
        np.testing.assert_allclose(x[column], y[column], rtol=TOL, atol=1e-7, err_msg=column)


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return {f"{f.name}/{k}": v for f in sorted(directory.glob("*.safetensors")) for k, v in load_file(f).items()}


def test_two_processes_pretrain_scmbm_as_one_fail_fast_and_resume_on_two_or_one(tmp_path, caplog):
    train, test = runs(["a", "b"], 12, 2), runs(["t"], 5)
    paths = [str(write_fmri(tmp_path / f"sub-0{i}.h5", train, test, seed=i)) for i in (1, 2)]
    params = {**SCMBM, "train": {**SCMBM["train"], "steps": 10, "val_fraction": 0.2, "eval_every": 5}}
    checkpoint = Checkpoint(tmp_path / "resume" / "scmbm.pt", "scmbm-job")

    def run(out: str, devices: int, **kill: int) -> None:
        launch(
            as_rank,
            devices=devices,
            log_file=str(tmp_path / f"{out}.log"),
            target=pretrain_scmbm,
            guard=[str(tmp_path / out), str(checkpoint.path.parent)],
            fmri_paths=paths,
            out_dir=str(tmp_path / out),
            encoder=EncoderConfig.from_dict(ENCODER),
            scmbm=ScmbmConfig.from_dict(params),
            seed=0,
            checkpoint=checkpoint,
            **kill,
        )

    run("one", 1)
    run("two", 2)
    assert_close(weights(tmp_path / "one"), weights(tmp_path / "two"), "1 vs 2 processes")
    assert_same_curve(tmp_path / "one" / "train_log.tsv", tmp_path / "two" / "train_log.tsv")
    log = (tmp_path / "two.log").read_text()
    assert "rank 1 INFO pretrain_scmbm step 9" in log and "rank 0 INFO pretrain_scmbm step 9" in log

    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"rank 1 \(pid \d+\) was killed by SIGKILL.*Rerun to resume"):
        run("killed", 2, kill_rank=1, kill_step=7)
    assert time.monotonic() - started < 60
    assert not (tmp_path / "killed").exists() and not list(tmp_path.glob(".killed*"))  # no partial artifact
    assert torch.load(checkpoint.path, weights_only=True)["step"] == 6  # checkpoint_every 3: after step 5
    shutil.copy(checkpoint.path, tmp_path / "written_by_two.pt")

    run("killed", 2)  # the rerun resumes on two processes: bit-identical to the straight run
    assert "resuming from step 6" in (tmp_path / "killed.log").read_text()
    straight, resumed = weights(tmp_path / "two"), weights(tmp_path / "killed")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    pd.testing.assert_frame_equal(*(pd.read_csv(tmp_path / o / "train_log.tsv", sep="\t") for o in ("two", "killed")))

    shutil.copy(tmp_path / "written_by_two.pt", checkpoint.path)
    with caplog.at_level(logging.INFO, logger="llm4brain"):
        run("on_one", 1)  # requeued onto one device: the same global batches, one process's sums
    assert "resuming from step 6" in caplog.text
    assert_close(straight, weights(tmp_path / "on_one"), "resumed on 1")
    assert not checkpoint.path.exists()


def write_captions(path: Path) -> str:
    """Captions of 2 to 10 words, so that the processes' shares of a batch hold different token counts."""
    keys = [(s, t) for s in ("a", "b", "t") for t in range(8 if s != "t" else 4)]
    lengths = [2 + (i * 5) % 9 for i in range(len(keys))]
    with atomic_h5(path, "captions") as f:
        write_keys(f, [k[0] for k in keys], [k[1] for k in keys])
        write_strings(f, "caption", [" ".join(CAPTIONS[i % 3].split()[:n]) for i, n in enumerate(lengths)])
    return str(path)


def test_two_processes_align_and_tune_a_4bit_lora_student_with_distillation_as_one(tmp_path):
    """pretrain_adaptor (contrastive, cross-subject and MMD terms and the subject adversary on the gathered
    batch, masked modelling of the held-out subject's sharded windows, validation, two micro-batches a step)
    and instruct_llm (a 4-bit LoRA student distilled from an unquantised teacher copy, on captions of
    different lengths: caption tokens counted over both processes; validated)."""
    inputs = adaptor_inputs(tmp_path, dropout=0.0)  # dropout masks are drawn per process: none to compare
    inputs["align"]["loss"] = {**inputs["align"]["loss"], "target_mbm": 0.5, "adversarial": 0.5}
    inputs["align"]["train"] = {**inputs["align"]["train"], "accumulate": 2}
    for devices in (1, 2):
        out = tmp_path / f"align{devices}"
        launch(
            as_rank,
            devices=devices,
            target=train_brain_aligner,
            guard=[str(out)],
            **typed(inputs),
            **adaptor_outputs(out),
        )
    assert_close(weights(tmp_path / "align1" / "model"), weights(tmp_path / "align2" / "model"), "aligner")
    assert_same_curve(*(tmp_path / f"align{d}" / "model" / "train_log.tsv" for d in (1, 2)))
    assert {"adversarial", "domain", "target_mbm"} <= set(
        pd.read_csv(tmp_path / "align2" / "model" / "train_log.tsv", sep="\t").columns
    )
    for s in SUBJECTS:
        with h5py.File(tmp_path / "align1" / f"{s}.h5") as a, h5py.File(tmp_path / "align2" / f"{s}.h5") as b:
            x, y = a["test/tokens"][:].astype(np.float32), b["test/tokens"][:].astype(np.float32)
            assert np.abs(x - y).max() <= 1e-3 * np.abs(x).max()  # float16 latents: their rounding

    instruct = {
        **DEFAULTS["instruct"],
        "input": "latents",
        "distill_weight": 1.0,
        "llm": {
            **DEFAULTS["instruct"]["llm"],
            "tuning": "lora",
            "quantization": "4bit",
            "lora": {**DEFAULTS["instruct"]["llm"]["lora"], "dropout": 0.0},
        },
        # validated on a quarter of the clips every 2 steps: the best weights kept are the same on both
        "train": {
            **inputs["align"]["train"],
            "steps": 4,
            "val_fraction": 0.25,
            "eval_every": 2,
            "lr": 1e-2,
            "accumulate": 1,
        },
    }
    captions = write_captions(tmp_path / "captions.h5")
    for devices in (1, 2):
        out = tmp_path / f"student{devices}"
        out.mkdir()  # as Snakemake makes an output's folder
        launch(
            as_rank,
            devices=devices,
            target=instruct_llm,
            guard=[str(out)],
            fmri_paths=inputs["fmri_paths"],
            latent_paths=[str(tmp_path / "align1" / f"{s}.h5") for s in SUBJECTS],
            align_dir=str(tmp_path / "align1" / "model"),
            feature_paths=inputs["feature_paths"],
            captions_path=captions,
            teacher_dir=inputs["teacher_dir"],
            model_dir=str(out / "model"),
            log_tsv=str(out / "log.tsv"),
            subjects=SUBJECTS,
            heldout=["sub-03"],
            instruct=InstructConfig.from_dict(instruct),
            seed=0,
        )
    assert_close(weights(tmp_path / "student1" / "model"), weights(tmp_path / "student2" / "model"), "student")
    assert_same_curve(tmp_path / "student1" / "log.tsv", tmp_path / "student2" / "log.tsv")
    assert pd.read_csv(tmp_path / "student2" / "log.tsv", sep="\t")["val_loss"].notna().sum() == 2
    assert {"lm", "distill"} <= set(pd.read_csv(tmp_path / "student2" / "log.tsv", sep="\t").columns)


def test_a_multi_node_launch_starts_itself_once_per_node_through_srun(tmp_path, monkeypatch):
    """In an allocation of 2 nodes the job's one process hands the launch to ``srun``, one task per node;
    here that task runs on this node alone, as node 0 of a 1-node allocation would, and receives the entry
    and its arguments (a checkpoint among them) through the spec file. Its 2 processes also check that
    gather restores the global batch from a strided share and returns each process its gradient."""
    import llm4brain.distributed as distributed

    commands, run = [], subprocess.run

    def srun(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
        commands.append(command)
        assert env[distributed.NODE] == "1" and command[:2] == ["srun", "--nodes=2"]
        assert "--ntasks-per-node=1" in command and command[-2:-1] == ["llm4brain.distributed"]
        tests = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])  # ddp_workers' folder
        return run(command[command.index(sys.executable) :], env={**env, "SLURM_NNODES": "1", "PYTHONPATH": tests})

    monkeypatch.setenv("SLURM_NNODES", "2")
    monkeypatch.setattr(distributed.subprocess, "run", srun)
    checkpoint = Checkpoint(tmp_path / "job.pt", "a-job")
    train = TrainConfig(steps=7)
    launch(
        report_world,
        devices=2,
        log_file=str(tmp_path / "job.log"),
        out=str(tmp_path),
        checkpoint=checkpoint,
        train=train,
    )
    assert len(commands) == 1 and not list(tmp_path.glob("*.launch.json"))  # the spec is removed
    for rank in (0, 1):
        record = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert record["size"] == 2 and record["checkpoint"] == [str(tmp_path / "job.pt"), "a-job"]
        assert record["train"] == ["TrainConfig", 7]  # a typed section crosses nodes as itself
        assert record["refused"].startswith("module.1 keep running statistics")  # the buffer policy
    guarded = json.loads((tmp_path / "rank1.json").read_text())["refused"].splitlines()[1:]
    assert len(guarded) == 4 and all("only rank 0 may" in line for line in guarded), guarded
    assert "node 0 INFO" in (tmp_path / "job.log").read_text()


def test_a_collective_on_a_device_its_backend_cannot_serve_fails(monkeypatch):
    """The harness every launched test process runs under: NCCL alone refuses a CPU tensor, the group a
    CUDA job starts (BACKENDS) serves both CPU and CUDA tensors, a CPU job's serves CPU tensors."""
    import torch.distributed as dist

    calls = []
    monkeypatch.setattr(dist, "all_reduce", lambda tensor, **_: calls.append(tensor.device.type))
    served_only("nccl", monkeypatch.setattr)
    with pytest.raises(RuntimeError, match="all_reduce of a cpu tensor: nccl has no backend for it"):
        dist.all_reduce(torch.zeros(1))
    assert not calls
    for backend in (BACKENDS["cuda"], BACKENDS["cpu"]):
        monkeypatch.undo()
        monkeypatch.setattr(dist, "all_reduce", lambda tensor, **_: calls.append(tensor.device.type))
        served_only(backend, monkeypatch.setattr)
        dist.all_reduce(torch.zeros(1))
    assert calls == ["cpu", "cpu"]


def test_each_process_draws_its_own_dropout_shares_the_batch_order_and_stops_with_the_others(tmp_path):
    """Two processes of a tiny fit with dropout: the same global batches, different dropout masks; given
    validation losses that differ by rank (one rank alone would stop at step 1, the other never), both stop
    at the step their mean decides (within a 30 s collective timeout: a process left waiting fails the
    job). Killed after its checkpoint, the rerun resumes each process's own dropout stream."""
    val_losses = [[10, 6, 2, 1, 0.5, 0.2], [0, 1, 2, 3, 4, 5]]  # means 5, 3.5, 2, 2: stale at step 3
    checkpoint = Checkpoint(tmp_path / "resume" / "streams.pt", "streams-job")  # rank 0 alone writes it

    def run(out: str, **kill: int) -> list[dict]:
        (tmp_path / out).mkdir(exist_ok=True)
        launch(
            as_rank,
            devices=2,
            timeout=30,
            target=rank_streams,
            guard=[str(checkpoint.path.parent)],
            out=str(tmp_path / out),
            steps=6,
            val_losses=val_losses,
            checkpoint=checkpoint,
            **kill,
        )
        return [json.loads((tmp_path / out / f"rank{r}.json").read_text()) for r in (0, 1)]

    straight = run("straight")
    for record in straight:
        assert record["steps"] == [0, 1, 2, 3] and record["val_loss"] == [5, 3.5, 2, 2]
    drawn = [record["drawn"] for record in straight]
    assert all(drawn[0][step]["batch"] == drawn[1][step]["batch"] for step in drawn[0])
    assert all(drawn[0][step]["mask"] != drawn[1][step]["mask"] for step in drawn[0])

    with pytest.raises(RuntimeError, match="rank 1"):
        run("killed", kill_rank=1, kill_step=3)
    resumed = run("killed")  # from the checkpoint after step 1
    for before, after in zip(straight, resumed, strict=True):
        assert sorted(after["drawn"]) == ["2", "3"] and after["steps"] == [0, 1, 2, 3]
        assert all(after["drawn"][step] == before["drawn"][step] for step in after["drawn"])


def test_the_process_that_died_is_reported_not_the_one_whose_collective_it_broke():
    """Rank 1 is killed while rank 0 waits for it in a collective, which fails within milliseconds: the
    launcher, checking every second, would find both dead and report rank 0 first, had rank 0 not waited."""
    with pytest.raises(RuntimeError, match=r"dies_in_a_collective: rank 1 \(pid \d+\) was killed by SIGKILL;"):
        launch(dies_in_a_collective, devices=2)


def test_processes_fork_from_one_importer_and_run_with_the_environment_of_their_launch(tmp_path):
    """A launch by ``"module:function"`` leaves the module unimported in the launching process (a training
    script's parent holds no model stack); every process of two launches forks from one server that imported
    it once, and sees the launching process's environment as it was at each launch, not at the first."""
    script = f"""
import json, os, sys
from llm4brain.distributed import launch
reports = []
for value in ("first", "second"):
    os.environ["LLM4BRAIN_TEST_VALUE"] = value
    out = os.path.join({str(tmp_path)!r}, value)
    os.mkdir(out)
    launch("ddp_workers:report_environment", devices=2, out=out, name="LLM4BRAIN_TEST_VALUE")
    reports += [json.load(open(os.path.join(out, f"rank{{r}}.json"))) for r in (0, 1)]
print(json.dumps({{"reports": reports, "imported": "ddp_workers" in sys.modules, "pid": os.getpid()}}))
"""
    paths = [str(Path(__file__).parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(run.stdout.splitlines()[-1])
    assert not result["imported"]
    assert [r["value"] for r in result["reports"]] == ["first", "first", "second", "second"]
    importers = {r["importer"] for r in result["reports"]}
    assert len(importers) == 1 and result["pid"] not in importers


def test_the_training_entry_points_import_without_touching_cuda():
    """The launch server imports a training entry's module before it forks the processes, and a process
    forked after CUDA was initialised (``cudaGetDeviceCount`` does it) cannot use its GPU. No GPU here can show
    it, so: importing the training scripts' entry modules calls neither CUDA query; nor may they import
    bitsandbytes, which loads its CUDA library, or peft (both imported when a model needs them, in the
    processes; transformers itself imports accelerate, which touches neither)."""
    script = """
import sys, torch
def refuse(*_):
    raise AssertionError("CUDA touched at import")
torch._C._cuda_getDeviceCount = torch._C._cuda_init = refuse
import llm4brain.align.train, llm4brain.instruct.train, llm4brain.scmbm.train, llm4brain.video_llm.train
print(sorted({"bitsandbytes", "peft"} & set(sys.modules)))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.stdout.split() == ["[]"]


def test_a_misspelt_entry_is_named_before_any_process_starts():
    """A ``"module:function"`` reference that names no module, or a module without that function, or that is
    not a reference at all, fails in the launching process with the reference in the message, before torch is
    imported (so before any process starts: no rank's traceback to dig out of a job log)."""
    script = """
import json, sys
from llm4brain.distributed import launch
errors = []
for reference in (
    "llm4brain.align.trian:train_brain_aligner",
    "llm4brain.align.train:train_brain_aligne",
    "llm4brain.align.train.train_brain_aligner",
):
    try:
        launch(reference, devices=2)
    except Exception as err:
        errors.append(f"{type(err).__name__}: {err}")
print(json.dumps({"errors": errors, "torch": "torch" in sys.modules}))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(run.stdout.splitlines()[-1])
    assert not result["torch"]
    kinds = ["ModuleNotFoundError", "AttributeError", "ValueError"]
    assert [error.partition(":")[0] for error in result["errors"]] == kinds, result["errors"]
    assert "no module named 'llm4brain.align.trian'" in result["errors"][0]
    assert "train.py defines no 'train_brain_aligne'" in result["errors"][1]
    assert "'llm4brain.align.train.train_brain_aligner' is not a 'module:function'" in result["errors"][2]
