"""The micro workflow run again from scratch, through profiles/slurm on a local one-node SLURM: artifacts
identical to a local run's, every job on SLURM, and every training rule retrained on 2 processes.

Apart from tests/test_workflow.py so that pytest-xdist runs it beside that file: most of its time is spent
waiting out the SLURM executor's status checks, while the CPU serves the other tests.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_copy import RUN, make_copy, planned_rules, snakemake

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def micro(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The micro workflow run locally: what the run from scratch must reproduce."""
    workdir = make_copy(tmp_path_factory.mktemp("micro"))
    snakemake(workdir)
    return workdir


@pytest.fixture(scope="module")
def from_scratch(micro: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bool, Path]:
    """The micro workflow run again from scratch in a fresh copy: through profiles/slurm on a local one-node
    SLURM when one can be started here (root), else locally. One run serves both the determinism and the
    SLURM tests; then a copy retrains every training rule on 2 processes each (:func:`on_two_devices`),
    locally: this run already covers submission, and a job launches its processes the same way on a SLURM
    node (distributed.launch), while each SLURM job waits out the executor's status checks, which back off by
    10 s per idle check. Returns the copy, whether SLURM ran it, and the 2-process copy."""
    from local_slurm import local_slurm

    tmp = tmp_path_factory.mktemp("scratch")
    workdir = make_copy(tmp / "workflow")
    profile = site_profile(workdir)
    try:
        with local_slurm(tmp / "slurm"):
            run = subprocess.run(
                ["timeout", "-k", "10", "840", sys.executable, "-m", "snakemake", "--workflow-profile", str(profile)],
                cwd=workdir,
                capture_output=True,
                text=True,
            )
            assert run.returncode == 0, run.stderr[-6000:]
            return workdir, True, on_two_devices(workdir, tmp / "two")
    except pytest.skip.Exception:
        snakemake(workdir)
        return workdir, False, on_two_devices(workdir, tmp / "two")


TRAINING = {
    "video_llm": ["train_video_llm"],
    "scmbm": ["pretrain_scmbm"],
    "align": ["pretrain_adaptor", "ablate_adaptor"],
    "instruct": ["instruct_llm", "ablate_instruct"],
}


METRICS = [f"{RUN}/align/metrics.tsv", f"{RUN}/eval/metrics.tsv"]


def on_two_devices(workdir: Path, target: Path) -> Path:
    """A copy of ``workdir`` whose training rules (all of them) run again with ``train.devices: 2``, and what
    the metrics need downstream. ``devices`` is no rerun trigger (it changes the speed, not the model):
    forced."""
    shutil.copytree(workdir, target, symlinks=True)
    path = target / "config" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    for stage in TRAINING:
        config.setdefault(stage, {}).setdefault("train", {})["devices"] = 2
    path.write_text(yaml.safe_dump(config))
    rules = [rule for rules in TRAINING.values() for rule in rules]
    assert planned_rules(target) == set()  # the devices edit alone reruns nothing
    run = subprocess.run(
        ["timeout", "-k", "10", "840", sys.executable, "-m", "snakemake", "--cores", "2", *METRICS]
        + ["--forcerun", *rules],
        cwd=target,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-6000:]
    return target


def test_rerun_from_scratch_gives_identical_artifacts(micro, from_scratch):
    assert_same_artifacts(from_scratch[0], micro)


def test_two_devices_train_what_one_trains(micro, from_scratch):
    """Every training rule on 2 processes (gloo): the same training
    curves and metrics as one process, within 1e-5 (the micro config trains without dropout)."""
    two = from_scratch[2]
    logs = [(log_rule(path, two / "logs"), path.read_text()) for path in (two / "logs").rglob("*.log")]
    for rules in TRAINING.values():
        for rule in rules:
            texts = [text for name, text in logs if name == rule]
            assert texts and all("2 processes on each of 1 node(s)" in t and "rank 1 INFO" in t for t in texts), rule
    for table in METRICS:
        one, other = (pd.read_csv(root / table, sep="\t") for root in (micro, two))
        pd.testing.assert_frame_equal(one, other, rtol=1e-5, atol=1e-7)
    for log in [f"{RUN}/align/model/train_log.tsv", f"{RUN}/instruct/train_log.tsv", f"{RUN}/scmbm/train_log.tsv"]:
        one, other = (pd.read_csv(root / log, sep="\t").drop(columns="grad_norm") for root in (micro, two))
        pd.testing.assert_frame_equal(one, other, rtol=1e-5, atol=1e-7)


GPU_RULES = {
    "cache_features",
    "train_video_llm",
    "pretrain_scmbm",
    "pretrain_adaptor",
    "ablate_adaptor",
    "instruct_llm",
    "ablate_instruct",
    "decode_captions",
    "decode_ablation",
}


def site_profile(workdir: Path) -> Path:
    """profiles/slurm adapted to the one-node test cluster as the README tells a site to: memory and CPUs
    per GPU that fit the node; everything else (executor, status command, GPUs, retries, env) as shipped."""
    profile = yaml.safe_load((workdir / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"]["mem_mb"] = "1000 * attempt"
    for resources in profile["set-resources"].values():
        resources.update({"mem_mb": "1000 * attempt"}, **({"cpus_per_gpu": 1} if "gpu" in resources else {}))
    site = workdir / "profiles" / "site"
    site.mkdir()
    (site / "config.yaml").write_text(yaml.safe_dump(profile))
    return site


def assert_same_artifacts(ours: Path, theirs: Path) -> None:
    """Every HDF5 artifact (dataset by dataset, and the attributes of the file, its groups and datasets), TSV
    table, safetensors file, JSON config and tokenizer file under results/ (benchmarks aside) equal. Artifacts
    record no timestamps, hosts or job ids, so every attribute must match."""
    files = sorted(
        p.relative_to(theirs)
        for p in theirs.rglob("results/**/*")
        if p.suffix in {".h5", ".tsv", ".safetensors", ".json", ".txt", ".model"} and "benchmarks" not in p.parts
    )
    assert {".h5", ".tsv", ".safetensors", ".json"} <= {name.suffix for name in files}
    assert any(name.name == "tokenizer.json" for name in files)
    assert {name for name in files if name.suffix in {".h5", ".json"}} == {
        p.relative_to(ours)
        for p in ours.rglob("results/**/*")
        if p.suffix in {".h5", ".json"} and "benchmarks" not in p.parts
    }
    for name in files:
        if name.suffix != ".h5":
            assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
            continue
        with h5py.File(ours / name) as a, h5py.File(theirs / name) as b:
            keys: list[str] = [""]
            b.visit(keys.append)
            for key in keys:
                node_a, node_b = (a[key], b[key]) if key else (a, b)
                assert dict(node_a.attrs).keys() == dict(node_b.attrs).keys(), f"{name}:{key or '/'} attrs"
                for attr, value in node_b.attrs.items():
                    assert np.array_equal(node_a.attrs[attr], value), f"{name}:{key or '/'}@{attr}"
                if isinstance(node_b, h5py.Dataset):
                    assert node_a.dtype == node_b.dtype and (node_a[()] == node_b[()]).all(), f"{name}:{key}"


def log_rule(path: Path, logs: Path) -> str:
    """The rule whose log ``path`` is: logs/[r{seed}/]{rule}.log or logs/[r{seed}/]{rule}/{wildcards}.log."""
    parts = path.relative_to(logs).parts
    return (parts[1:] if re.fullmatch(r"r\d+", parts[0]) else parts)[0].removesuffix(".log")


@pytest.mark.slurm
def test_slurm_profile_runs_every_job_on_slurm(micro, from_scratch):
    """Every job ran as a SLURM job, the GPU rules with a GPU, and the artifacts equal the local run's
    (test_rerun_from_scratch_gives_identical_artifacts compares them)."""
    workdir, on_slurm, _ = from_scratch
    if not on_slurm:
        pytest.skip("no local SLURM could be started (needs root); the from-scratch run was local")
    logs = {p: p.read_text() for p in (workdir / "logs").rglob("*.log") if "slurm" not in p.parts}
    assert len(logs) == len(list((micro / "logs").rglob("*.log")))
    for path, text in logs.items():
        rule = log_rule(path, workdir / "logs")
        assert "SLURM_JOB_ID=" in text and "HDF5_USE_FILE_LOCKING=FALSE" in text, path
        assert ("CUDA_VISIBLE_DEVICES=unset" not in text) == (rule in GPU_RULES), path
