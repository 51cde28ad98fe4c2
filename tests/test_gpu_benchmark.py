"""benchmarks/gpu.py: its tiny run works on CPU (every stage, 2 processes too), and its real sizes are the
published ones."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import REPO

from llm4brain.sections import VideoConfig

SCRIPT = REPO / "benchmarks" / "gpu.py"


@pytest.fixture(scope="module")
def gpu():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_tiny_run_times_every_stage_on_one_and_two_processes(tmp_path, gpu):
    out = tmp_path / "gpu.tsv"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    args = [sys.executable, str(SCRIPT), "--tiny", "--devices", "2", "--warmup", "1", "--steps", "1", "--out", out]
    run = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    table = pd.read_csv(out, sep="\t")
    assert list(table.columns) == list(gpu.COLUMNS)
    assert set(table.stage) == set(gpu.STAGES)
    assert (table.status == "ok").all(), table[["stage", "status"]]
    assert (table.step_s > 0).all() and (table.samples_per_s > 0).all() and (table.peak_mem_gb > 0).all()
    assert (table.memory == "cpu peak RSS of the process so far").all()
    parallel = table[table.devices == 2]
    assert sorted(parallel.stage) == sorted(gpu.PARALLEL)
    for stage in gpu.PARALLEL:  # the printed 2-vs-1 comparison
        assert f"{stage}: 2 processes" in run.stdout
    assert "student 4-bit vs bf16" in run.stdout
    student = table.set_index("stage")["shape"]  # bitsandbytes' NF4 runs on CPU too: the 4-bit student is quantised
    assert "NF4 linear layers" in student["student_lora_4bit"] and "NF4" not in student["student_lora_bf16"]


def test_real_sizes_are_the_published_ones(gpu):
    from transformers import InstructBlipVideoQFormerModel, LlamaForCausalLM

    setup = gpu.make_setup(gpu.read_config(REPO / "config" / "real-vicuna7b.yaml"), tiny=False)
    assert gpu.parameters(lambda: LlamaForCausalLM(setup.llama)) == 6_738_415_616  # Vicuna-7B / LLaMA-7B
    vit = gpu.parameters(lambda: gpu.build_vision_model(VideoConfig.from_dict(setup.video), seed=0))
    assert 1.00e9 < vit < 1.02e9  # EVA ViT-g/14
    qformer = gpu.parameters(lambda: InstructBlipVideoQFormerModel(setup.qformer))
    assert 0.18e9 < qformer < 0.19e9 and setup.num_queries == 32  # InstructBLIP's Q-Former (188 M)
    with torch.device("meta"):
        encoder = gpu.build_encoder(setup.grid, gpu.EncoderConfig.from_dict(setup.encoder))
    assert encoder.tokenizer.pos_embed.shape[1:] == (3714, 1024)  # 59,412 grayordinates in patches of 16
    assert len(encoder.blocks) == 24 and encoder.blocks[0].attn.num_heads == 16
    assert encoder.blocks[0].mlp.fc1.out_features == 1024  # mlp_ratio 1
    assert setup.scmbm["decoder"]["dim"] == 512 and setup.scmbm["mask_ratio"] == 0.75
    needs = gpu.needs_gb(setup)
    assert 13 < needs["decode"] < needs["student_lora_bf16"] < needs["student_lora_4bit"] < 24
