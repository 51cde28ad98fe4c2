"""GPU kit: every GPU stage at its real size, with random weights built from config, timed on this machine.

    .venv/bin/python benchmarks/gpu.py                       # real sizes, every visible GPU
    .venv/bin/python benchmarks/gpu.py --devices 1 --out gpu.tsv
    .venv/bin/python benchmarks/gpu.py --stages decode student_lora_4bit   # a part
    .venv/bin/python benchmarks/gpu.py --tiny                # the same code at tiny widths, on CPU in seconds

Real sizes need a CUDA GPU (about 20 GB for the 7B-size stages); on CPU only ``--tiny`` runs.

Nothing is downloaded: each model is built from its configuration with random weights, so the figures are
those of the real shapes (memory, step time), not of trained models. Sizes come from ``--config`` (default
``config/real-vicuna7b.yaml``: the MinD-Vis encoder, SC-MBM decoder, alignment, LoRA student and decoding
settings, with every schema default filled in) and from the published architectures:

- ``vit_g_cache``: ``cache_features``' forward (``build_vision_model``, timm ``eva_giant_patch14_224``, EVA
  ViT-g/14 at 224 px, 1.0 B parameters; InstructBLIP's tower is the same model with 39 of its 40 blocks) on
  ``video.batch_size`` frames, under the job's bf16 autocast on CUDA, the fp16 tokens copied back to the host.
- ``scmbm_step``: one ``pretrain_scmbm`` optimiser step (``MaskedBrainModel`` around ``build_encoder``, the
  shared loop's AdamW step with clipping and autocast) on ``scmbm.train.batch_size`` windows of 2 × 59,412
  cortical grayordinates, Wen 2018's CIFTI samples (3,714 tokens of 16).
- ``align_step``: one ``pretrain_adaptor`` step: ``BrainAligner`` (frozen encoder + adaptors) around an
  InstructBLIP-size ``InstructionQFormer`` (768 wide, 12 layers, 32 queries over 4 frames, 188 M), the
  rule's objective, imported (``AlignmentObjective``): contrastive, token and cross-subject terms on 2
  labelled subjects' windows, and the domain term, masked modelling and the subject adversary (as the config
  weights them) on as many held-out ones.
- ``student_lora_bf16`` / ``student_lora_4bit``: one ``instruct_llm`` step (``build_student``, caption loss +
  ``distillation`` from ``frozen_logits``) with a Vicuna-7B-size Llama (4096 wide, 32 layers, vocabulary
  32,000): LoRA on the bf16 base shared with the teacher, and LoRA on a 4-bit NF4 copy next to the bf16
  teacher, loaded from the teacher's weights through ``quantized_loading`` (bitsandbytes; ``from_pretrained``
  of a state dict, so no 13 GB checkpoint is written).
- ``decode``: ``generate_captions`` of ``evaluate.batch_size`` captions with beam search from the same
  7B-size captioner; random weights rarely emit EOS, so captions run to ``max_new_tokens``.

Per stage: peak memory (CUDA: ``torch.cuda.max_memory_allocated`` over the stage, weights included; CPU: the
process' peak resident memory so far, which only grows), seconds per step and samples per second. Data are
random tensors in memory: the input pipeline is measured by ``benchmarks/train_step.py`` and ``scale.py``. A
stage whose weights and optimiser state alone exceed the device's memory is skipped with what it needs.
``--devices N`` (default: every visible GPU, else 1) also runs the SC-MBM and alignment steps in N processes
(``distributed.launch``; the training loop's DDP, NCCL on CUDA, gloo on CPU), each on its share of the same
global batch, and prints N-vs-1 samples/s.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import gc
import os
import resource
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import InstructBlipVideoQFormerConfig, InstructBlipVideoQFormerModel, LlamaConfig, LlamaForCausalLM

from llm4brain.align.model import BrainAligner, save_aligner
from llm4brain.align.objective import AlignmentObjective, build_trainables, uses_heldout_fmri
from llm4brain.distributed import launch, world
from llm4brain.instruct.train import build_student, distillation, frozen_logits, shares_base
from llm4brain.models.captioner import Captioner, generate_captions
from llm4brain.models.fmri_encoder import build_encoder
from llm4brain.models.instructblip_video import FRAMES, InstructionQFormer
from llm4brain.models.mbm import MaskedBrainModel
from llm4brain.models.quantization import quantized_loading
from llm4brain.models.tokenizer import train_word_tokenizer
from llm4brain.runtime import autocast, select_device
from llm4brain.sections import AlignConfig, EncoderConfig, EvaluateConfig, InstructConfig, TrainConfig, VideoConfig
from llm4brain.training import start_run
from llm4brain.video.features import build_vision_model
from llm4brain.video.preprocessing import data_config

REPO = Path(__file__).resolve().parents[1]
GRAYORDINATES = 59412  # Wen 2018's cortical CIFTI samples (data.wen2018.images: cifti)
EVA_G: dict[str, Any] = {"source": "timm", "name": "eva_giant_patch14_224", "weights": None, "kwargs": {}}
VICUNA_7B: dict[str, Any] = {  # lmsys/vicuna-7b-v1.1, InstructBLIP's language model
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
}
INSTRUCTION_TOKENS = 14  # the prompt in BERT tokens ([CLS] ... [SEP]), as the Q-Former reads it
TINY: dict[str, Any] = {  # --tiny: the same stages at widths that run on two CPU cores in seconds
    "grid": (512,),
    "encoder": {"dim": 64, "depth": 2, "num_heads": 4},
    "decoder": {"dim": 32, "depth": 1, "num_heads": 2},
    "vit": {"img_size": 56, "embed_dim": 64, "depth": 2, "num_heads": 2},
    "qformer": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128},
    "vision_dim": 64,
    "queries": 4,
    "llm": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
    },
    "vocab": 256,
    "batch": {"video": 8, "scmbm": 4, "align": 4, "instruct": 2, "decode": 4},
    "decode": {"max_new_tokens": 4, "num_beams": 2},
    "caption_tokens": 8,
}
COLUMNS = ("stage", "devices", "status", "peak_mem_gb", "memory", "step_s", "samples_per_s", "samples", "shape")


@dataclass
class Setup:
    """What every stage builds: the config sections it reads and the published model configurations."""

    grid: tuple[int, ...]
    encoder: dict[str, Any]
    scmbm: dict[str, Any]
    align: dict[str, Any]
    instruct: dict[str, Any]
    evaluate: dict[str, Any]
    video: dict[str, Any]
    video_llm: dict[str, Any]
    labelled: int  # subjects whose clips are paired (the others are held out, unlabelled)
    qformer: InstructBlipVideoQFormerConfig
    num_queries: int
    llama: LlamaConfig
    words: int  # the synthetic caption vocabulary (word-level tokenizer)


@dataclass
class Row:
    stage: str
    devices: int
    status: str = "ok"
    peak_mem_gb: float = float("nan")
    memory: str = ""
    step_s: float = float("nan")
    samples_per_s: float = float("nan")
    samples: str = ""
    shape: str = ""


def read_config(path: Path) -> dict[str, Any]:
    """The config file with every schema default filled in, as the workflow validates it at DAG build."""
    from llm4brain.config_schema import read_schema, validate_config

    config = yaml.safe_load(path.read_text())
    validate_config(config, read_schema(REPO / "config" / "schema.yaml"))
    return config


def make_setup(config: dict[str, Any], tiny: bool) -> Setup:
    """Real sizes from ``config`` and the published architectures; ``tiny`` shrinks every width and batch."""
    encoder, scmbm, align, instruct, evaluate, video = (
        copy.deepcopy(config[section]) for section in ("encoder", "scmbm", "align", "instruct", "evaluate", "video")
    )
    video_llm = {**config["video_llm"], "num_frames": FRAMES}
    video["model"] = copy.deepcopy(EVA_G)  # the config's InstructBLIP tower needs its checkpoint; timm builds EVA-g
    labelled = len(config["data"]["subjects"]) - len(align["heldout"])
    qformer = InstructBlipVideoQFormerConfig()  # InstructBLIP's: 768 wide, 12 layers, cross-attends 1408-d ViT-g
    llama = LlamaConfig(**VICUNA_7B, tie_word_embeddings=False)
    grid: tuple[int, ...] = (GRAYORDINATES,)
    words, queries = 20000, 32  # under the word-level trainer's 30,000-token cap
    if tiny:
        grid, words, queries = TINY["grid"], TINY["vocab"] - 16, TINY["queries"]
        encoder.update(TINY["encoder"])
        scmbm["decoder"].update(TINY["decoder"])
        video["model"]["kwargs"] = dict(TINY["vit"])
        qformer = InstructBlipVideoQFormerConfig(**TINY["qformer"], encoder_hidden_size=TINY["vision_dim"])
        llama = LlamaConfig(**{**VICUNA_7B, **TINY["llm"], "vocab_size": TINY["vocab"]}, tie_word_embeddings=False)
        batch = TINY["batch"]
        video["batch_size"], scmbm["train"]["batch_size"] = batch["video"], batch["scmbm"]
        align["train"]["batch_size"], instruct["train"]["batch_size"] = batch["align"], batch["instruct"]
        align["train"]["accumulate"] = instruct["train"]["accumulate"] = 1
        evaluate.update(TINY["decode"], batch_size=batch["decode"])
        video_llm["max_caption_tokens"] = TINY["caption_tokens"]
    return Setup(
        grid, encoder, scmbm, align, instruct, evaluate, video, video_llm, labelled, qformer, queries, llama, words
    )


# ---- measuring ---------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_step(step: Callable[[int], object], device: torch.device, warmup: int, steps: int) -> float:
    """Mean wall time of ``steps`` calls after ``warmup`` untimed ones (kernels chosen, allocator warm)."""
    for i in range(warmup):
        step(i)
    synchronize(device)
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    synchronize(device)
    return (time.perf_counter() - start) / steps


@contextlib.contextmanager
def peak_memory(row: Row, device: torch.device) -> Iterator[None]:
    """Fill ``row``'s peak memory over the block: CUDA's allocator peak, or the process' peak RSS on CPU."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield
    if device.type == "cuda":
        row.peak_mem_gb, row.memory = torch.cuda.max_memory_allocated(device) / 2**30, "cuda max allocated"
    else:
        row.peak_mem_gb, row.memory = peak_rss_gb(), "cpu peak RSS of the process so far"


def peak_rss_gb() -> float:
    """This process' peak resident memory (VmHWM: unlike ``ru_maxrss``, not inherited from a spawning parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # no procfs: kB on Linux, bytes on macOS


def device_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / 2**30
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def parameters(build: Callable[[], torch.nn.Module]) -> int:
    """Parameter count of a model built on the meta device: no memory, no initialisation."""
    with torch.device("meta"):
        return sum(p.numel() for p in build().parameters())


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---- the models, built as the pipeline builds them ---------------------------------------------------------


def instruction_qformer(setup: Setup, seed: int = 0) -> InstructionQFormer:
    """InstructBLIP's Q-Former (random weights), frozen, as ``load_instruction_qformer`` returns it."""
    torch.manual_seed(seed)
    qformer = InstructBlipVideoQFormerModel(setup.qformer)
    queries = torch.randn(1, setup.num_queries, setup.qformer.hidden_size) * 0.02
    ids = torch.randint(setup.qformer.vocab_size, (1, INSTRUCTION_TOKENS))
    return InstructionQFormer(qformer, queries, ids, FRAMES).eval().requires_grad_(False)


def caption_words(setup: Setup, n: int, seed: int) -> list[str]:
    """``n`` captions of random words, longer than ``max_caption_tokens`` (truncated as real long ones are)."""
    g = torch.Generator().manual_seed(seed)
    length = setup.video_llm["max_caption_tokens"] + 8
    return [" ".join(f"w{i}" for i in torch.randint(setup.words, (length,), generator=g).tolist()) for _ in range(n)]


def build_teacher(setup: Setup, device: torch.device) -> tuple[InstructionQFormer, Captioner]:
    """The InstructBLIP-Video teacher as ``load_instructblip_video`` assembles it: Q-Former and projection in
    fp32, the LLM in the config's dtype, built directly on ``device`` (a 7B fp32 CPU init would take 27 GB)."""
    words = [f"w{i}" for i in range(setup.words)] + [setup.video_llm["prompt"]]
    tokenizer = train_word_tokenizer(words)
    if len(tokenizer) > setup.llama.vocab_size:
        raise ValueError(f"caption vocabulary {len(tokenizer)} exceeds the LLM's {setup.llama.vocab_size}")
    config = copy.deepcopy(setup.llama)
    config.pad_token_id, config.bos_token_id, config.eos_token_id = (
        tokenizer.pad_token_id,
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    with torch.device(device):
        llm = LlamaForCausalLM._from_config(config, dtype=getattr(torch, setup.video_llm["dtype"]))
    qformer = instruction_qformer(setup)
    captioner = Captioner(
        llm,
        tokenizer,
        qformer.config.hidden_size,
        setup.video_llm["template"],
        setup.video_llm["prompt"],
        setup.video_llm["max_caption_tokens"],
        bos_first=False,
    )
    for module in (qformer, captioner):
        module.to(device).eval().requires_grad_(False)
    return qformer, captioner


def quantized_copy(captioner: Captioner, quantization: str, device: torch.device) -> Captioner:
    """The captioner with its LLM loaded again through ``quantized_loading`` (bitsandbytes), from the same
    weights: what ``load_teacher(..., quantization=...)`` gives the student, without writing 13 GB to disk."""
    llm = captioner.llm
    quantized = LlamaForCausalLM.from_pretrained(
        None, config=llm.config, state_dict=llm.state_dict(), dtype=llm.dtype, **quantized_loading(quantization, device)
    )
    return copy.deepcopy(captioner, memo={id(llm): quantized})


# ---- the stages ----------------------------------------------------------------------------------------------
# Each builds its models as its rule does and times what the rule repeats; the data are random tensors of the
# global batch, of which each process of a data-parallel run takes its share, as the rules' streams do.


def vit_g_cache(setup: Setup, device: torch.device, warmup: int, steps: int) -> Row:
    params = setup.video
    row = Row("vit_g_cache", 1, samples="frames")
    with peak_memory(row, device):
        with torch.device(device):  # a 1 B-parameter init on the device, not on the host first
            model: Any = build_vision_model(VideoConfig.from_dict(params), seed=0)  # timm's forward_features
        size = data_config(VideoConfig.from_dict(params), model)["input_size"]
        frames = torch.randn(params["batch_size"], *size)
        frames = frames.pin_memory() if device.type == "cuda" else frames
        shape: list[tuple[int, ...]] = []

        def step(_: int) -> None:  # cache_features' loop body, less the HDF5 write
            with torch.inference_mode(), autocast(device):
                tokens = model.forward_features(frames.to(device, non_blocking=True))
                shape[:] = [tuple(tokens.to(torch.float16).cpu().shape)]

        row.step_s = seconds_per_step(step, device, warmup, steps)
    row.samples_per_s = params["batch_size"] / row.step_s
    row.shape = f"{params['batch_size']} frames {tuple(size)} -> tokens {shape[0]}"
    return row


def scmbm_step(setup: Setup, device: torch.device, warmup: int, steps: int) -> Row:
    """``pretrain_scmbm``'s step: its ``loss_fn`` on ``fit``'s optimiser step (DDP when launched)."""
    train, decoder, window, shard = setup.scmbm["train"], setup.scmbm["decoder"], setup.encoder["window"], world()
    row = Row("scmbm_step", shard.size, samples="windows")
    with peak_memory(row, device):
        torch.manual_seed(0)
        model = MaskedBrainModel(
            build_encoder(setup.grid, EncoderConfig.from_dict(setup.encoder)),
            decoder["dim"],
            decoder["depth"],
            decoder["num_heads"],
            setup.scmbm["mask_ratio"],
        ).to(device)
        generator = torch.Generator().manual_seed(1)
        volumes = torch.randn(train["batch_size"], window, *setup.grid)  # the global batch

        def loss_fn(_: int) -> tuple[torch.Tensor, dict[str, float]]:
            model.train()
            loss, _ = model(shard.share(volumes).to(device), generator, shard)
            return loss, {"masked_mse": loss.item()}

        run = start_run(model, loss_fn, TrainConfig.from_dict(train), [generator], [], device)
        row.step_s = seconds_per_step(run.step, device, warmup, steps)
    samples = train["batch_size"] * train["accumulate"]
    row.samples_per_s = samples / row.step_s
    row.shape = f"{samples} x {window} x {setup.grid}, {model.encoder.tokenizer.pos_embed.shape[1]} tokens"
    return row


def align_step(setup: Setup, device: torch.device, warmup: int, steps: int) -> Row:
    """``pretrain_adaptor``'s step: its objective (:class:`~llm4brain.align.objective.AlignmentObjective`, every
    term ``align.loss`` turns on: the labelled terms, then on the held-out windows the domain term, masked
    modelling and the subject adversary) on ``fit``'s optimiser step (DDP when launched)."""
    params, window, shard = AlignConfig.from_dict(setup.align), setup.encoder["window"], world()
    train = params.train
    batch, labelled, heldout = train.batch_size, setup.labelled, len(params.heldout)
    uses_heldout = uses_heldout_fmri(params, params.heldout)
    row = Row("align_step", shard.size, samples="windows")
    with peak_memory(row, device):
        qformer = instruction_qformer(setup).to(device)
        torch.manual_seed(0)
        trainables = build_trainables(
            grid=setup.grid,
            encoder=EncoderConfig.from_dict(setup.encoder),
            align=params,
            qformer=qformer,
            token_width=setup.qformer.hidden_size,
            subjects=[f"sub-{i:02d}" for i in range(labelled + heldout)],
            uses_heldout=uses_heldout,
            device=device,
        )
        generator = torch.Generator().manual_seed(1)
        objective = AlignmentObjective(trainables, params, labelled, train.steps, generator, shard)
        pick = torch.arange(batch)  # the global batch: B clips, each seen by every labelled subject
        windows = torch.randn(batch, labelled, window, *setup.grid)
        heldout_windows = torch.randn(batch, window, *setup.grid)
        subjects = labelled + torch.arange(batch) % max(heldout, 1)  # each window's held-out subject
        targets = torch.randn(batch, FRAMES * setup.num_queries, setup.qformer.hidden_size, device=device)

        def heldout_batch() -> tuple[torch.Tensor, torch.Tensor]:
            return shard.share(heldout_windows).to(device), shard.share(subjects).to(device)

        def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
            mine = shard.share(pick)
            inputs = shard.share(windows).transpose(0, 1).flatten(0, 1).to(device)  # subject by subject
            return objective(step, mine.to(device), inputs, targets[mine], heldout_batch if uses_heldout else None)

        run = start_run(trainables.modules(), loss_fn, train, [generator], [], device)
        row.step_s = seconds_per_step(run.step, device, warmup, steps)
    samples = batch * train.accumulate * (labelled + uses_heldout)
    row.samples_per_s = samples / row.step_s
    row.shape = f"{samples} x {window} x {setup.grid} -> {FRAMES * setup.num_queries} x {setup.qformer.hidden_size}"
    return row


def student_step(
    setup: Setup,
    device: torch.device,
    warmup: int,
    steps: int,
    teacher: tuple[InstructionQFormer, Captioner],
    quantization: str,
) -> Row:
    """``instruct_llm``'s step: the student ``build_student`` makes from the teacher (its LLM shared under
    LoRA, or a quantised copy next to the bf16 teacher, which distillation keeps), caption loss +
    ``distillation`` from ``frozen_logits``, on ``fit``'s optimiser step."""
    instruct = InstructConfig.from_dict(setup.instruct)
    instruct = instruct.replace(llm=instruct.llm.replace(quantization=quantization))
    train, window, shard = instruct.train, setup.encoder["window"], world()
    row = Row(f"student_lora_{'bf16' if quantization == 'none' else quantization}", 1, samples="captions")
    with peak_memory(row, device), tempfile.TemporaryDirectory() as tmp:
        qformer, captioner = teacher
        base = teacher if shares_base(instruct.llm) else (qformer, quantized_copy(captioner, quantization, device))
        align_dir = ""
        if instruct.input == "encoder":  # the aligner build_student loads: random weights, saved as the rule saves
            align_dir = str(Path(tmp) / "align")
            torch.manual_seed(0)
            encoder, align = EncoderConfig.from_dict(setup.encoder), AlignConfig.from_dict(setup.align)
            aligner = BrainAligner(setup.grid, encoder, align, qformer).cpu()
            save_aligner(Path(align_dir), aligner, "random-init")
            del aligner  # build_student loads its own
        student = build_student("", align_dir, instruct, device, base)
        batch, tokens = train.batch_size, (FRAMES * setup.num_queries, setup.qformer.hidden_size)
        inputs = torch.randn(batch, window, *setup.grid) if instruct.input == "encoder" else torch.randn(batch, *tokens)
        video = torch.randn(batch, *tokens, device=device)
        texts = caption_words(setup, batch, seed=2)
        weight, temperature = instruct.distill_weight, instruct.distill_temperature

        def loss_fn(_: int) -> tuple[torch.Tensor, dict[str, float]]:
            student.train()
            idx = shard.share(torch.arange(batch))
            batch_texts = [texts[i] for i in idx.tolist()]
            lm, logits, ids, mask = student.captioner.caption_loss(student.tokens(inputs[idx].to(device)), batch_texts)
            loss, terms = lm, {"lm": lm.item()}
            if weight > 0:
                kd = distillation(logits, frozen_logits(captioner, student, video[idx], ids, mask), mask, temperature)
                loss, terms["distill"] = loss + weight * kd, kd.item()
            return loss, terms

        run = start_run(student, loss_fn, train, [], [], device)
        row.step_s = seconds_per_step(run.step, device, warmup, steps)
        trainable = sum(p.numel() for p in student.parameters() if p.requires_grad)
        nf4 = sum(type(m).__module__.startswith("bitsandbytes") for m in student.captioner.llm.modules())  # Linear4bit
    samples = batch * train.accumulate
    row.samples_per_s = samples / row.step_s
    row.shape = (
        f"{samples} captions of {setup.video_llm['max_caption_tokens']} tokens after "
        f"{tokens[0]} fMRI tokens, {trainable / 1e6:.1f} M trainable" + (f", {nf4} NF4 linear layers" if nf4 else "")
    )
    return row


def decode(
    setup: Setup, device: torch.device, warmup: int, steps: int, teacher: tuple[InstructionQFormer, Captioner]
) -> Row:
    """``generate_captions`` (decode_captions, teacher_captions) on one batch of token sets."""
    evaluate = EvaluateConfig.from_dict(setup.evaluate)
    row = Row("decode", 1, samples="captions")
    tokens = torch.randn(evaluate.batch_size, FRAMES * setup.num_queries, setup.qformer.hidden_size)
    with peak_memory(row, device):
        row.step_s = seconds_per_step(lambda _: generate_captions(teacher[1], tokens, evaluate), device, warmup, steps)
    row.samples_per_s = evaluate.batch_size / row.step_s
    row.shape = (
        f"batch {evaluate.batch_size}, {evaluate.num_beams} beams, {evaluate.max_new_tokens} new tokens after "
        f"{FRAMES * setup.num_queries} video tokens"
    )
    return row


# ---- what each stage needs, and running them ---------------------------------------------------------------


def needs_gb(setup: Setup) -> dict[str, float]:
    """A lower bound per stage: the weights it holds (+ gradients and AdamW states of what trains, all of the
    SC-MBM model, the aligner's adaptors and Q-Former-side layers at most), from meta-device parameter counts.
    Activations come on top."""
    gb, encoder = 2**30, EncoderConfig.from_dict(setup.encoder)
    vit = parameters(lambda: build_vision_model(VideoConfig.from_dict(setup.video), seed=0)) * 4
    scmbm = (
        parameters(lambda: MaskedBrainModel(build_encoder(setup.grid, encoder), **decoder_args(setup))) * 16
    )  # fp32 weights, gradients, two AdamW moments
    qformer = parameters(lambda: InstructBlipVideoQFormerModel(setup.qformer)) * 4
    encoder_size = parameters(lambda: build_encoder(setup.grid, encoder)) * 4
    llm = parameters(lambda: LlamaForCausalLM(setup.llama))
    trained_encoder = encoder_size * 4  # the student trains the aligned encoder (train_encoder): + gradients, AdamW
    return {
        "vit_g_cache": vit / gb,
        "scmbm_step": scmbm / gb,
        "align_step": (encoder_size + 2 * qformer) / gb,
        "student_lora_bf16": (2 * llm + 2 * qformer + trained_encoder) / gb,
        "student_lora_4bit": (2.55 * llm + 2 * qformer + trained_encoder) / gb,  # NF4 ≈ 0.55 B/param + bf16 teacher
        "decode": (2 * llm + qformer) / gb,
    }


def decoder_args(setup: Setup) -> dict[str, Any]:
    decoder = setup.scmbm["decoder"]
    return {
        "decoder_dim": decoder["dim"],
        "decoder_depth": decoder["depth"],
        "decoder_heads": decoder["num_heads"],
        "mask_ratio": setup.scmbm["mask_ratio"],
    }


SINGLE = {"vit_g_cache": vit_g_cache, "scmbm_step": scmbm_step, "align_step": align_step}
PARALLEL = ("scmbm_step", "align_step")
LLM_STAGES = ("decode", "student_lora_4bit", "student_lora_bf16")  # the shared-base student mutates the LLM: last
STAGES = (*SINGLE, *LLM_STAGES)


def guarded(name: str, needs: float, device: torch.device, devices: int, run: Callable[[], Row]) -> Row:
    """``run()``, or a row saying why not: the device is too small, or it ran out of memory."""
    have = device_memory_gb(device)
    if needs > have:
        return Row(name, devices, status=f"skipped: needs ~{needs:.0f} GB, {device.type} has {have:.0f} GB")
    try:
        return run()
    except torch.OutOfMemoryError:
        return Row(name, devices, status=f"out of memory on {device.type} ({have:.0f} GB)")
    finally:
        free(device)


def run_all(setup: Setup, device: torch.device, warmup: int, steps: int, stages: list[str]) -> list[Row]:
    """``stages`` on one device; the 7B-size stages share one teacher, built once."""
    needs = needs_gb(setup)
    rows = [
        guarded(n, needs[n], device, 1, functools.partial(f, setup, device, warmup, steps))
        for n, f in SINGLE.items()
        if n in stages
    ]
    llm_stages = [n for n in LLM_STAGES if n in stages]
    have = device_memory_gb(device)
    if not llm_stages:
        return rows
    if needs["decode"] > have:  # the least of the three: the teacher alone does not fit
        return rows + [
            Row(n, 1, status=f"skipped: needs ~{needs[n]:.0f} GB, {device.type} has {have:.0f} GB") for n in llm_stages
        ]
    try:
        teacher = build_teacher(setup, device)
    except torch.OutOfMemoryError:
        free(device)
        return rows + [Row(n, 1, status=f"out of memory building the 7B teacher ({have:.0f} GB)") for n in llm_stages]
    for name in llm_stages:
        if name == "decode":
            run: Callable[[], Row] = lambda: decode(setup, device, warmup, steps, teacher)  # noqa: E731
        else:
            kind = name.removeprefix("student_lora_").replace("bf16", "none")
            run = functools.partial(student_step, setup, device, warmup, steps, teacher, kind)
        rows.append(guarded(name, needs[name], device, 1, run))
    return rows


def parallel_entry(*, setup: Setup, warmup: int, steps: int, stages: list[str], out: str) -> None:
    """One process of the data-parallel runs (``distributed.launch``); rank 0 writes the rows to ``out``."""
    device = select_device("auto")  # each process its own GPU
    shard = world()
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // shard.size))
    needs = needs_gb(setup)
    rows = [
        guarded(name, needs[name], device, shard.size, functools.partial(SINGLE[name], setup, device, warmup, steps))
        for name in stages
    ]
    if shard.main:
        Path(out).write_text(yaml.safe_dump([asdict(row) for row in rows]))


def run_parallel(setup: Setup, devices: int, warmup: int, steps: int, stages: list[str]) -> list[Row]:
    """``stages`` (SC-MBM, alignment) in ``devices`` processes, each with its share of the global batch."""
    for section in (stage.removesuffix("_step") for stage in stages):
        batch = getattr(setup, section)["train"]["batch_size"]
        if batch % devices:
            raise SystemExit(f"{section}.train.batch_size {batch} does not divide over {devices} processes")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.yaml"
        launch(parallel_entry, devices=devices, setup=setup, warmup=warmup, steps=steps, stages=stages, out=str(out))
        return [Row(**row) for row in yaml.safe_load(out.read_text())]


def show(rows: list[Row]) -> None:
    print(f"{'stage':18s} {'devices':>7s} {'peak GB':>8s} {'step s':>8s} {'samples/s':>10s}  samples   status / shape")
    for r in rows:
        detail = r.shape if r.status == "ok" else r.status
        print(
            f"{r.stage:18s} {r.devices:7d} {r.peak_mem_gb:8.2f} {r.step_s:8.3f} {r.samples_per_s:10.2f}  "
            f"{r.samples:9s} {detail}"
        )
    memory = {r.memory for r in rows if r.memory}
    print(f"peak memory: {', '.join(sorted(memory))}")
    by = {(r.stage, r.devices): r for r in rows if r.status == "ok"}
    for name in PARALLEL:
        many = [r for (stage, n), r in by.items() if stage == name and n > 1]
        if (name, 1) in by and many:
            one, n = by[name, 1], many[0]
            ratio = n.samples_per_s / one.samples_per_s
            print(
                f"{name}: {n.devices} processes {n.samples_per_s:.2f} samples/s vs 1 process {one.samples_per_s:.2f} "
                f"-> {ratio:.2f}x (ideal {n.devices}x, efficiency {ratio / n.devices:.2f})"
            )
    bf16, nf4 = by.get(("student_lora_bf16", 1)), by.get(("student_lora_4bit", 1))
    if bf16 and nf4:
        print(
            f"student 4-bit vs bf16: memory {nf4.peak_mem_gb / bf16.peak_mem_gb:.2f}x, "
            f"samples/s {nf4.samples_per_s / bf16.samples_per_s:.2f}x"
        )


def write_tsv(rows: list[Row], path: Path) -> None:
    lines = ["\t".join(COLUMNS)]
    for r in rows:
        values = asdict(r)
        lines.append("\t".join(f"{values[c]:.4g}" if isinstance(values[c], float) else str(values[c]) for c in COLUMNS))
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "config" / "real-vicuna7b.yaml")
    parser.add_argument("--tiny", action="store_true", help="tiny widths and batches (CPU, seconds)")
    parser.add_argument("--devices", type=int, default=None, help="also run SC-MBM and alignment on N processes")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per stage")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per stage (default 3, --tiny 2)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="default: all")
    parser.add_argument("--out", type=Path, default=None, help="write the table as TSV")
    args = parser.parse_args(argv)
    devices = args.devices or max(1, torch.cuda.device_count())
    steps = args.steps or (2 if args.tiny else 3)
    setup = make_setup(read_config(args.config), args.tiny)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.tiny:
        parser.error("real sizes need a CUDA GPU (a 7B-size step takes hours on CPU); --tiny runs the same code on CPU")
    if device.type == "cuda" and devices > torch.cuda.device_count():
        parser.error(f"--devices {devices}: only {torch.cuda.device_count()} GPU(s) visible")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"{'tiny widths' if args.tiny else 'real sizes'} from {args.config.name} on {name} "
        f"({device_memory_gb(device):.0f} GB); {args.warmup} warm-up + {steps} timed steps per stage"
    )
    rows = run_all(setup, device, args.warmup, steps, args.stages)
    free(device)  # the teacher's cached blocks, before rank 0 of the N-process runs takes this GPU
    parallel = [stage for stage in PARALLEL if stage in args.stages]
    if devices > 1 and parallel:
        rows += run_parallel(setup, devices, args.warmup, steps, parallel)
    show(rows)
    if args.out:
        write_tsv(rows, args.out)
    return rows


if __name__ == "__main__":
    main()
