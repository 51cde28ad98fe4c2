"""Data-parallel training on this machine's CPUs: 2 processes (gloo) against 1, for the SC-MBM and the
alignment steps, through the rules' own entry points (pretrain_scmbm, train_brain_aligner).

    .venv/bin/python benchmarks/ddp.py [--devices 2] [--steps 40]
    .venv/bin/python benchmarks/ddp.py --launches 3 [--devices 2] [--steps 2]

Writes demo-size data to a temporary folder (3 subjects, 2 labelled, 16 × 16 × 12 grids, 2-TR windows,
the demo's encoder, no dropout) and runs each stage for S and 2·S steps on 1 and on N processes; the
difference of the two wall times is the time of S steps without the set-up (process start, model build,
writing). Prints, per stage: samples/s on 1 and on N processes and their ratio (the speed-up; on two cores
shared by the N processes' threads, below N), and the largest weight difference between the 1- and the
N-process models relative to the largest weight, next to the difference between two one-process runs that
differ only in their thread count. Both are rounding (summation order) magnified by Adam, which divides
each gradient by its own running size: near-zero gradient elements move on their rounding noise.

``--launches R``: what starting a job's processes costs. R rounds, each running one N-process alignment job
(S steps) three ways, alternated: the job's process imports the training code and spawns the processes (each
imports it again), spawns them without importing it, and forks them from one server that imported it once
(``launch``'s way). Each job runs in a new interpreter that, but for the first way, imports no torch, as a
workflow job's script does (``python -m llm4brain.distributed``, the launch as JSON). Prints each job's wall
seconds and the CPU seconds of the whole machine over it (``/proc/stat``: every process, so run it on an idle
machine), and whether the three ways wrote identical weights.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from scale import defaults  # noqa: E402
from train_step import CLIPS, ENCODER, GRID, QFORMER, REPEATS, write_subject  # noqa: E402

from llm4brain.align.train import train_brain_aligner  # noqa: E402
from llm4brain.artifacts import atomic_h5  # noqa: E402
from llm4brain.distributed import launch, launch_spec  # noqa: E402
from llm4brain.entries import split  # noqa: E402
from llm4brain.models.captioner import Captioner  # noqa: E402
from llm4brain.models.tokenizer import train_word_tokenizer  # noqa: E402
from llm4brain.models.video_llm import VideoQFormer, build_llm, qformer_config, save_teacher  # noqa: E402
from llm4brain.scmbm.train import pretrain_scmbm  # noqa: E402
from llm4brain.sections import (  # noqa: E402
    AlignConfig,
    EncoderConfig,
    ScmbmConfig,
    VideoLlmLlmConfig,
    VideoLlmQformerConfig,
)

SUBJECTS = ["sub-01", "sub-02", "sub-03"]
BATCH = 32
KEY_BIASES = ("qkv.bias", "key.bias")  # shift-invariant under softmax: their gradient is rounding noise


def write_inputs(root: Path) -> dict[str, Any]:
    """Three subjects' train and test splits, every segment's cached tokens and a tiny teacher."""
    fmri = []
    for i, subject in enumerate(SUBJECTS):
        torch.manual_seed(i)
        path = root / f"{subject}.h5"
        write_subject(path)
        fmri.append(str(path))
    add_test_split(fmri)
    features = []
    for s in range(CLIPS // 30):
        path = root / f"seg{s:02d}.features.h5"
        with atomic_h5(path, "features") as f:
            f.attrs["segment"] = f"seg{s:02d}"
            f.create_dataset("tokens", data=np.random.default_rng(s).standard_normal((30, 4, 8, 64)).astype(np.float16))
            f.create_dataset("tr", data=np.arange(30, dtype=np.int32))
        features.append(str(path))
    captions = ["a red circle moving left", "two blue squares moving up"]
    tokenizer = train_word_tokenizer(captions + ["describe"])
    template, prompt = "<Video>{video}</Video> {prompt}", "describe"
    qformer = VideoQFormer(
        qformer_config(VideoLlmQformerConfig.from_dict({**QFORMER, "dropout": 0.0}), 64), 4, QFORMER["num_queries"]
    )
    llm = VideoLlmLlmConfig(hidden_size=64, num_layers=1, num_heads=2, intermediate_size=128)
    captioner = Captioner(build_llm(llm, tokenizer, 64), tokenizer, 64, template, prompt, 8)
    save_teacher(
        root / "teacher", qformer, captioner, {"template": template, "prompt": prompt, "max_caption_tokens": 8}
    )
    return {"fmri": fmri, "features": features, "teacher": str(root / "teacher")}


def add_test_split(paths: list[str]) -> None:
    """A test split (one segment, its clips once) in each subject's file, which pretrain_adaptor encodes."""
    import h5py

    from llm4brain.artifacts import write_keys

    for path in paths:
        with h5py.File(path, "a") as f:
            group = f.create_group("test")
            group.create_dataset("bold", data=torch.randn(30, *GRID).numpy(), chunks=(1, *GRID))
            write_keys(group, ["seg00"] * 30, list(range(30)))


def training(steps: int, devices: int, threads: int = 0) -> dict[str, Any]:
    """The train section: ``steps`` steps of batch :data:`BATCH`, ``threads`` threads per process (0: the
    machine's two cores shared between the processes), no checkpoints."""
    return {
        **defaults()["align"]["train"],
        "steps": steps,
        "batch_size": BATCH,
        "threads": threads or max(1, 2 // devices),
        "warmup": 2,
        "checkpoint_every": 0,
    }


def align_arguments(inputs: dict[str, Any], out: Path, train: dict[str, Any]) -> dict[str, Any]:
    """``train_brain_aligner``'s arguments: sub-03 held out, the outputs in ``out``."""
    return {
        "fmri_paths": inputs["fmri"],
        "feature_paths": inputs["features"],
        "teacher_dir": inputs["teacher"],
        "model_dir": str(out / "model"),
        "latent_paths": [str(out / f"{s}.h5") for s in SUBJECTS],
        "metrics_path": str(out / "metrics.tsv"),
        "subjects": SUBJECTS,
        "encoder": EncoderConfig.from_dict({**ENCODER, "dropout": 0.0}),
        "align": AlignConfig.from_dict({**defaults()["align"], "heldout": ["sub-03"], "train": train}),
        "seed": 0,
    }


def run(stage: str, inputs: dict[str, Any], out: Path, devices: int, steps: int, threads: int = 0) -> float:
    """Wall seconds of one run of ``stage`` for ``steps`` steps on ``devices`` processes of ``threads`` threads
    (0: the machine's two cores shared between them)."""
    train = training(steps, devices, threads)
    started = time.perf_counter()
    if stage == "scmbm":
        launch(
            pretrain_scmbm,
            devices=devices,
            fmri_paths=inputs["fmri"],
            out_dir=str(out),
            encoder=EncoderConfig.from_dict({**ENCODER, "dropout": 0.0}),
            scmbm=ScmbmConfig.from_dict({**defaults()["scmbm"], "train": train}),
            seed=0,
        )
    else:
        launch(train_brain_aligner, devices=devices, **align_arguments(inputs, out, train))
    return time.perf_counter() - started


ENTRY = "llm4brain.align.train:train_brain_aligner"
# a job's process: imports the launcher only, as a training rule's script does, and starts its processes the
# given way (sys.argv: start method, launch spec); "spawn+import" also imports the entry's module first, as a
# script that passed the function itself did before 8c5a2e6
JOB = f"""import sys, llm4brain.distributed as d
if sys.argv[1] == "spawn+import":
    import {split(ENTRY)[0]}
d.START_METHOD = sys.argv[1].partition("+")[0]
d.run_spec(sys.argv[2])"""
METHODS = ("spawn+import", "spawn", "forkserver")


def busy_seconds() -> float:
    """CPU seconds every process of this machine has used since boot (``/proc/stat``: user, nice, system)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return sum(int(value) for value in fields[:3]) / os.sysconf("SC_CLK_TCK")


def launches(inputs: dict[str, Any], root: Path, rounds: int, devices: int, steps: int) -> None:
    """Print each job's wall and machine CPU seconds, spawned against forked, alternated over ``rounds``."""
    print(f"{'round':<7}{'start method':<14}{'wall s':>8}{'CPU s':>8}")
    written: dict[str, dict[str, torch.Tensor]] = {}
    for round_ in range(rounds):
        for method in METHODS:
            out = root / f"launch-{method.replace('+', '-')}-{round_}"
            spec = root / f"{out.name}.json"
            arguments = align_arguments(inputs, out, training(steps, devices))
            spec.write_text(
                launch_spec(
                    ENTRY,
                    devices=devices,
                    device="cpu",
                    log_file=str(root / f"{out.name}.log"),
                    timeout=None,
                    kwargs=arguments,
                )
            )
            cpu, started = busy_seconds(), time.perf_counter()
            job = subprocess.run([sys.executable, "-c", JOB, method, str(spec)], capture_output=True, text=True)
            wall, cpu = time.perf_counter() - started, busy_seconds() - cpu
            if job.returncode:
                raise RuntimeError(f"the {method} job failed:\n{job.stderr[-4000:]}")
            print(f"{round_:<7}{method:<14}{wall:>8.1f}{cpu:>8.1f}", flush=True)
            written.setdefault(method, weights(out / "model"))
    same = all(
        torch.equal(written[method][name], written["forkserver"][name])
        for method in METHODS
        for name in written[method]
    )
    print(
        f"(one {devices}-process alignment job of {steps} steps per line, in a new interpreter; 'spawn+import': the "
        "job's process imports the entry's module before it spawns; CPU: the whole machine's over the job, "
        f"/proc/stat; weights of the three ways bit-identical: {same})"
    )


def weights(out: Path) -> dict[str, torch.Tensor]:
    return {f"{f.name}/{k}": v.float() for f in sorted(out.rglob("*.safetensors")) for k, v in load_file(f).items()}


def relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest |a - b| over every weight but the attention key biases, over the largest |a|."""
    kept = [name for name in a if not name.endswith(KEY_BIASES)]
    scale = max(float(a[name].abs().max()) for name in kept)
    return max(float((a[name] - b[name]).abs().max()) for name in kept) / scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--steps", type=int, help="S: S and 2·S steps timed (default 40; 2 with --launches)")
    parser.add_argument("--launches", type=int, default=0, metavar="R", help="instead: R rounds of job start-up costs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inputs = write_inputs(root)
        if args.launches:
            launches(inputs, root, args.launches, args.devices, args.steps or 2)
            return
        args.steps = args.steps or 40
        header = f"{'stage':<8}{'1 proc samples/s':>18}{f'{args.devices} proc samples/s':>18}{'speed-up':>10}"
        print(f"{header}{f'weights 1 vs {args.devices}':>18}{'1 thread vs 2':>16}")
        for stage in ("scmbm", "align"):
            rates = []
            for devices in (1, args.devices):
                short = run(stage, inputs, root / f"{stage}{devices}s", devices, args.steps)
                long = run(stage, inputs, root / f"{stage}{devices}", devices, 2 * args.steps)
                rates.append(BATCH * args.steps / max(long - short, 1e-9))
            run(stage, inputs, root / f"{stage}1t", 1, 2 * args.steps, threads=1)  # rounding alone
            one = weights(root / f"{stage}1")
            processes = relative_difference(one, weights(root / f"{stage}{args.devices}"))
            threads = relative_difference(one, weights(root / f"{stage}1t"))
            figures = f"{rates[0]:>18.1f}{rates[1]:>18.1f}{rates[1] / rates[0]:>10.2f}"
            print(f"{stage:<8}{figures}{processes:>18.1e}{threads:>16.1e}")
    print(
        f"({REPEATS} repeats of {CLIPS} clips per subject, batch {BATCH}, {2 * args.steps} steps; weights: max |a - b| "
        "/ max |a| after the run, attention key biases aside; '1 thread vs 2' is the same one-process run with one "
        "thread instead of two: rounding alone, the scale the process count's difference is to be read against)"
    )


if __name__ == "__main__":
    main()
