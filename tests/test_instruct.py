"""The student's LLM: LoRA on a frozen base, 8-bit / 4-bit bitsandbytes loading, saving only what trained."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import DEFAULTS, TRAIN_DEFAULTS
from test_models import ALIGN, CAPTIONS, ENCODER, PROMPT, TEMPLATE, tiny_teacher

from llm4brain.instruct.student import load_student, load_student_encoder, save_student
from llm4brain.instruct.train import build_student, distillation
from llm4brain.models.video_llm import save_teacher
from llm4brain.sections import AlignConfig, EncoderConfig, InstructConfig, TrainConfig
from llm4brain.training import fit

LORA = {
    "r": 8,
    "alpha": 16,
    "dropout": 0.0,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
TRAIN = {
    **TRAIN_DEFAULTS,
    "steps": 40,
    "lr": 3e-2,
    "weight_decay": 0.0,
    "warmup": 2,
    "grad_clip": 1.0,
    "checkpoint_every": 0,
    "accumulate": 1,
}


def instruct(tuning: str, quantization: str = "none") -> InstructConfig:
    return InstructConfig.from_dict(
        {
            "input": "latents",
            "train_qformer": False,
            "train_encoder": True,
            "encoder_tokens": False,
            "distill_weight": 0.0,
            "distill_temperature": 1.0,
            "llm": {"tuning": tuning, "quantization": quantization, "gradient_checkpointing": False, "lora": LORA},
        }
    )


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    qformer, captioner = tiny_teacher()
    directory = tmp_path_factory.mktemp("teacher") / "video_llm"
    save_teacher(directory, qformer, captioner, {"template": TEMPLATE, "prompt": PROMPT, "max_caption_tokens": 16})
    return directory


def train(student, tokens: torch.Tensor, steps: int = TRAIN["steps"]):
    def loss_fn(step):
        return student.captioner.caption_loss(tokens, CAPTIONS)[0], {}

    student.train()
    return fit(student, loss_fn, TrainConfig.from_dict({**TRAIN, "steps": steps}), "test")


def base_weights(llm: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The base LLM's own weights (LoRA's ``base_layer`` names mapped back), for bit-identity checks."""
    return {
        name.replace("base_model.model.", "").replace(".base_layer", ""): p.detach().clone()
        for name, p in llm.named_parameters()
        if "lora_" not in name
    }


def test_lora_trains_adapters_only_and_reloads_to_identical_logits(teacher_dir, tmp_path):
    torch.manual_seed(0)
    student = build_student(str(teacher_dir), "", instruct("lora"))
    before = base_weights(student.captioner.llm)
    trainable = {n for n, p in student.captioner.llm.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    tokens = torch.randn(3, 4, 32)
    history = train(student, tokens)
    assert history["loss"].iloc[-5:].mean() < 0.93 * history["loss"].iloc[0]  # adapters learn (slowly from B = 0)
    after = base_weights(student.captioner.llm)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)

    save_student(tmp_path, student.eval(), str(teacher_dir), "", instruct("lora"))
    assert (tmp_path / "llm_adapter" / "adapter_model.safetensors").exists() and not (tmp_path / "llm").exists()
    reloaded = load_student(tmp_path, teacher_dir)
    ids, mask = student.captioner.encode_captions(CAPTIONS)
    with torch.inference_mode():
        expected = student.captioner.caption_logits(tokens, ids, mask)
        torch.testing.assert_close(reloaded.captioner.caption_logits(tokens, ids, mask), expected, rtol=0, atol=0)


def test_frozen_llm_trains_nothing_in_it(teacher_dir):
    student = build_student(str(teacher_dir), "", instruct("frozen"))
    assert not any(p.requires_grad for p in student.captioner.llm.parameters())
    assert all(p.requires_grad for p in student.captioner.projection.parameters())


@pytest.mark.parametrize("quantization,layer", [("8bit", "Linear8bitLt"), ("4bit", "Linear4bit")])
def test_quantized_base_runs_a_lora_training_step_on_cpu(teacher_dir, quantization, layer):
    torch.manual_seed(0)
    student = build_student(str(teacher_dir), "", instruct("lora", quantization))
    layers = {name: type(m).__name__ for name, m in student.captioner.llm.named_modules()}
    assert layer in layers.values()
    assert [kind for name, kind in layers.items() if name.endswith("lm_head")] == ["Linear"]  # never quantised
    assert type(student.captioner.projection) is torch.nn.Linear
    lora = {n: p.detach().clone() for n, p in student.captioner.llm.named_parameters() if p.requires_grad}
    history = train(student, torch.randn(3, 4, 32), steps=3)
    assert history["loss"].notna().all() and (history["grad_norm"] > 0).all()
    changed = [
        n for n, p in student.captioner.llm.named_parameters() if p.requires_grad and not torch.equal(p, lora[n])
    ]
    assert changed


def test_a_4bit_student_trains_on_after_evaluation_on_any_cpu(teacher_dir, monkeypatch):
    """On a CPU with AVX512-BF16 bitsandbytes repacks a 4-bit layer for an inference kernel without a backward
    pass the first time the layer runs in eval mode without gradients (and cannot repack layers narrower than
    a quantisation block). A student validated mid-training must keep its layout: the CPU feature is pretended
    here, so that every machine checks it."""
    import bitsandbytes.nn.modules

    monkeypatch.setattr(bitsandbytes.nn.modules, "has_avx512bf16", lambda: True)
    torch.manual_seed(0)
    student = build_student(str(teacher_dir), "", instruct("lora", "4bit"))
    layers = [m for m in student.captioner.llm.modules() if isinstance(m, bitsandbytes.nn.Linear4bit)]
    assert layers
    tokens = torch.randn(3, 4, 32)
    ids, mask = student.captioner.encode_captions(CAPTIONS)
    student.eval()
    with torch.no_grad():
        student.captioner.caption_logits(tokens, ids, mask)
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)
    history = train(student, tokens, steps=2)
    assert history["loss"].notna().all() and (history["grad_norm"] > 0).all()


def test_distillation_vanishes_when_student_sees_what_teacher_sees(teacher_dir):
    student = build_student(str(teacher_dir), "", instruct("full"))
    teacher = copy.deepcopy(student.captioner)
    tokens = torch.randn(3, 4, 32)
    ids, mask = student.captioner.encode_captions(CAPTIONS)
    with torch.inference_mode():
        s = student.captioner.caption_logits(tokens, ids, mask)
        t = teacher.caption_logits(tokens, ids, mask)
        assert distillation(s, t, mask, 2.0).item() == pytest.approx(0.0, abs=1e-6)
        assert distillation(s, teacher.caption_logits(torch.randn(3, 4, 32), ids, mask), mask, 2.0).item() > 0.0


def test_lora_student_shares_the_teachers_llm_and_distils_from_its_frozen_base(teacher_dir):
    """LoRA on an unquantised base: one LLM serves teacher and student; with the adapters switched off it
    gives exactly a separate teacher copy's logits, while training moves the student's."""
    from llm4brain.instruct.train import frozen_logits, shares_base
    from llm4brain.models.video_llm import load_teacher

    params = instruct("lora")
    assert shares_base(params.llm) and not shares_base(instruct("lora", "4bit").llm)
    qformer, teacher, _ = load_teacher(teacher_dir)
    torch.manual_seed(0)
    student = build_student(str(teacher_dir), "", params, teacher=(qformer, teacher))
    assert student.captioner.llm.get_base_model() is teacher.llm
    assert student.captioner.projection is not teacher.projection
    tokens = torch.randn(3, 4, 32)
    train(student, tokens, steps=5)
    separate = load_teacher(teacher_dir)[1]
    ids, mask = student.captioner.encode_captions(CAPTIONS)
    student.train()  # as inside the training loop
    with torch.no_grad():
        expected = separate.caption_logits(tokens, ids, mask)
        torch.testing.assert_close(frozen_logits(teacher, student, tokens, ids, mask), expected, rtol=0, atol=0)
        assert not torch.allclose(student.captioner.caption_logits(tokens, ids, mask), expected)


def save_tiny_aligner(teacher_dir: Path, directory: Path) -> tuple[int, int, int]:
    """An aligner around the teacher's Q-Former, saved where build_student looks; returns its fMRI grid."""
    from llm4brain.align.model import BrainAligner, save_aligner
    from llm4brain.models.video_llm import load_video_qformer

    grid = (8, 8, 4)
    aligner = BrainAligner(
        grid, EncoderConfig.from_dict(ENCODER), AlignConfig.from_dict(ALIGN), load_video_qformer(teacher_dir)
    )
    save_aligner(directory, aligner, "teacher")
    return grid


@pytest.mark.parametrize("train_encoder", [True, False])
def test_end_to_end_student_tunes_the_aligned_encoder_only_when_asked(teacher_dir, tmp_path, train_encoder):
    """``train_encoder: false`` keeps the align stage's encoder (and its map into the Q-Former) bit-identical
    while the Q-Former, projection and LLM learn; true tunes it too."""
    torch.manual_seed(0)
    grid = save_tiny_aligner(teacher_dir, tmp_path / "align")
    params = instruct("full").replace(input="encoder", train_qformer=True, train_encoder=train_encoder)
    student = build_student(str(teacher_dir), str(tmp_path / "align"), params)
    volumes = torch.randn(3, 1, *grid)
    before = {n: p.detach().clone() for n, p in student.aligner.named_parameters()}

    def loss_fn(step):
        return student.captioner.caption_loss(student.tokens(volumes), CAPTIONS)[0], {}

    student.train()
    fit(student, loss_fn, TrainConfig.from_dict({**TRAIN, "steps": 3}), "test")
    moved = {n for n, p in student.aligner.named_parameters() if not torch.equal(p, before[n])}
    encoder_side = {n for n in before if n.startswith(("encoder.", "to_context."))}
    assert any(n.startswith("qformer.") for n in moved)
    assert (moved & encoder_side) == (encoder_side if train_encoder else set())


def test_encoder_tokens_reach_the_llm_after_the_aligned_ones_and_reload_identically(teacher_dir, tmp_path):
    """``encoder_tokens``: the LLM's prefix is the Q-Former's Q tokens, then the encoder's N tokens mapped into
    the same space by a trained linear map, which is saved (safetensors) and reloaded to identical captions'
    logits; the frozen-latents student cannot have it."""
    torch.manual_seed(0)
    grid = save_tiny_aligner(teacher_dir, tmp_path / "align")
    params = instruct("full").replace(input="encoder", encoder_tokens=True)
    student = build_student(str(teacher_dir), str(tmp_path / "align"), params)
    volumes = torch.randn(3, 1, *grid)
    n_encoder = student.aligner.encoder(volumes).shape[1]
    aligned = student.aligner(volumes)
    tokens = student.tokens(volumes)
    assert tokens.shape == (3, aligned.shape[1] + n_encoder, aligned.shape[2])
    torch.testing.assert_close(tokens[:, : aligned.shape[1]], aligned, rtol=0, atol=0)
    before = student.encoder_map.weight.detach().clone()

    def loss_fn(step):
        return student.captioner.caption_loss(student.tokens(volumes), CAPTIONS)[0], {}

    student.train()
    fit(student, loss_fn, TrainConfig.from_dict({**TRAIN, "steps": 3}), "test")
    assert not torch.equal(student.encoder_map.weight, before)
    (tmp_path / "student").mkdir()
    save_student(tmp_path / "student", student.eval(), str(teacher_dir), str(tmp_path / "align"), params)
    assert (tmp_path / "student" / "encoder_tokens.safetensors").exists()
    reloaded = load_student(tmp_path / "student", teacher_dir)
    ids, mask = student.captioner.encode_captions(CAPTIONS)
    with torch.no_grad():
        expected = student.captioner.caption_logits(student.tokens(volumes), ids, mask)
    torch.testing.assert_close(
        reloaded.captioner.caption_logits(reloaded.encode(volumes), ids, mask), expected, rtol=0, atol=0
    )
    # the nearest-train pool's student without its LLM encodes exactly as the whole student does
    encoder = load_student_encoder(tmp_path / "student", teacher_dir, torch.device("cpu"))
    assert encoder.input_kind == "encoder" and encoder.window == reloaded.window
    torch.testing.assert_close(encoder.encode(volumes, torch.device("cpu")), reloaded.encode(volumes), rtol=0, atol=0)
    with pytest.raises(ValueError, match="encoder_tokens needs the end-to-end student"):
        build_student(str(teacher_dir), "", instruct("full").replace(encoder_tokens=True))


def instruct_arguments(inputs: dict, align: Path, captions: str, out: Path) -> dict:
    """``instruct_llm``'s arguments but its section and seed: :func:`test_stream.adaptor_inputs`' data, the
    align stage's outputs in ``align``, the student and its log in ``out``; sub-03 held out."""
    from test_stream import adaptor_outputs

    return {
        "fmri_paths": inputs["fmri_paths"],
        "latent_paths": adaptor_outputs(align)["latent_paths"],
        "align_dir": str(align / "model"),
        "feature_paths": inputs["feature_paths"],
        "captions_path": captions,
        "teacher_dir": inputs["teacher_dir"],
        "model_dir": str(out / "model"),
        "log_tsv": str(out / "log.tsv"),
        "subjects": inputs["subjects"],
        "heldout": ["sub-03"],
    }


def test_the_student_validates_on_whole_clips_it_never_trains_on(tmp_path, monkeypatch):
    """``instruct.train.val_fraction`` holds out that share of the training clips, every labelled subject's
    and repeat's samples of each: no training batch reads them, the log records their loss every
    ``eval_every`` steps, and the run is deterministic."""
    from test_distributed import write_captions
    from test_stream import adaptor_inputs, adaptor_outputs, typed

    from llm4brain.align.train import train_brain_aligner
    from llm4brain.fmri.stream import SampleRows
    from llm4brain.instruct import train as instruct_train

    inputs = typed(adaptor_inputs(tmp_path))
    train_brain_aligner(**inputs, **adaptor_outputs(tmp_path / "align"))
    taken: list[tuple[SampleRows, set[tuple[int, int]]]] = []

    class Recorded(SampleRows):
        def take(self, samples):
            mine = next(seen for rows, seen in taken if rows is self)
            picked = np.asarray(samples, np.int64)
            mine.update(zip(self.file_index[picked].tolist(), self.rows[picked].tolist(), strict=True))
            return super().take(samples)

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            taken.append((self, set()))

    monkeypatch.setattr(instruct_train, "SampleRows", Recorded)
    params = instruct("full").replace(
        distill_weight=0.2,
        train=TrainConfig.from_dict({**TRAIN, "steps": 6, "batch_size": 8, "val_fraction": 0.25, "eval_every": 2}),
    )
    logs = []
    for run in ("a", "b"):
        taken.clear()
        (tmp_path / run).mkdir()
        captions = write_captions(tmp_path / "captions.h5")
        arguments = instruct_arguments(inputs, tmp_path / "align", captions, tmp_path / run)
        instruct_train.instruct_llm(**arguments, instruct=params, seed=0)
        logs.append(pd.read_csv(tmp_path / run / "log.tsv", sep="\t"))
    (train_rows, trained), (val_rows, validated) = taken
    assert trained and validated and not trained & validated
    assert trained <= set(zip(train_rows.file_index.tolist(), train_rows.rows.tolist(), strict=True))
    assert validated == set(zip(val_rows.file_index.tolist(), val_rows.rows.tolist(), strict=True))
    # whole clips: each validation clip's every sample, of both labelled subjects and every repeat
    keys = [f.keys() for f in val_rows.files]
    clips = {keys[f][r] for f, r in validated}
    assert 0 < len(clips) < 16
    every = {(f, r) for f, of_file in enumerate(keys) for r, key in enumerate(of_file) if key in clips}
    assert validated == every and {f for f, _ in validated} == {0, 1}
    assert logs[0]["val_loss"].notna().tolist() == [False, True, False, True, False, True]
    pd.testing.assert_frame_equal(logs[0], logs[1])


def test_the_teacher_validates_on_clips_it_never_trains_on(tmp_path, monkeypatch):
    """``video_llm.train.val_fraction``: the teacher's training batches never read a validation clip, its
    validation reads every one of them, and its log records the validation loss every ``eval_every`` steps."""
    from test_distributed import write_captions
    from test_stream import write_features

    from llm4brain.artifacts import FeatureFiles
    from llm4brain.sections import VideoLlmConfig
    from llm4brain.seeds import SeedOffset
    from llm4brain.training import validation_clips
    from llm4brain.video_llm.train import train_video_llm

    read: dict[bool, set] = {True: set(), False: set()}  # the clips read with and without gradients
    clips = FeatureFiles.clips

    def recorded(self, keys):
        read[torch.is_grad_enabled()].update(keys)
        return clips(self, keys)

    monkeypatch.setattr(FeatureFiles, "clips", recorded)
    features = [write_features(tmp_path / f"{s}.h5", s, 8, i) for i, s in enumerate("ab")]
    train = {**TRAIN, "steps": 6, "batch_size": 8, "threads": 1, "val_fraction": 0.25, "eval_every": 2}
    video_llm = VideoLlmConfig.from_dict({**DEFAULTS["video_llm"], "train": train})
    train_video_llm(
        feature_paths=features,
        captions_path=write_captions(tmp_path / "captions.h5"),
        out_dir=tmp_path / "teacher",
        train_segments=["a", "b"],
        video_llm=video_llm,
        seed=0,
    )
    every = [(s, t) for s in "ab" for t in range(8)]
    held = validation_clips(every, 0.25, torch.Generator().manual_seed(SeedOffset.VIDEO_LLM_VALIDATION))
    assert len(held) == 4 and read[True] and not read[True] & held and held <= read[False]
    log = pd.read_csv(tmp_path / "teacher" / "train_log.tsv", sep="\t")
    assert log["val_loss"].notna().tolist() == [False, True, False, True, False, True]


def test_subject_layers_learn_only_from_their_own_subjects_through_align_instruct_and_decoding(tmp_path):
    """``align.subject_kernel``: the align stage trains the labelled subjects' input layers and leaves the
    held-out one's at zero when no term reads its fMRI; the end-to-end student goes on training the labelled
    ones; decoding reads each subject's windows through its own layer (and the held-out subject's, still zero,
    is the shared encoder's input as it is)."""
    from test_distributed import write_captions
    from test_stream import adaptor_inputs, adaptor_outputs, typed

    from llm4brain.align.model import load_aligner
    from llm4brain.align.train import train_brain_aligner
    from llm4brain.artifacts import read_captions
    from llm4brain.evaluate.decode import nearest_train_pool, pooled, read_pool, student_tokens
    from llm4brain.instruct.student import student_inputs
    from llm4brain.instruct.train import instruct_llm
    from llm4brain.models.video_llm import load_video_qformer

    inputs = typed(adaptor_inputs(tmp_path))
    align = inputs["align"].replace(subject_kernel=3, loss=inputs["align"].loss.replace(domain=0.0))
    inputs = {**inputs, "align": align}
    train_brain_aligner(**inputs, **adaptor_outputs(tmp_path / "align"))
    aligner = load_aligner(tmp_path / "align" / "model", load_video_qformer(inputs["teacher_dir"]))
    assert aligner.subjects == ("sub-01", "sub-02", "sub-03")  # the labelled ones, then the held-out one
    norms = [float(layer.weight.detach().abs().sum()) for layer in aligner.subject_layers.convs]
    assert norms[0] > 0 and norms[1] > 0 and norms[2] == 0
    captions = write_captions(tmp_path / "captions.h5")
    params = instruct("full").replace(input="encoder", train=TrainConfig.from_dict({**TRAIN, "steps": 3}))
    (tmp_path / "student").mkdir()
    instruct_llm(
        **instruct_arguments(inputs, tmp_path / "align", captions, tmp_path / "student"), instruct=params, seed=0
    )
    student_dir = tmp_path / "student" / "model"
    student = load_student(student_dir, inputs["teacher_dir"])
    tuned = student.aligner.subject_layers.convs
    for s in (0, 1):
        assert not torch.equal(tuned[s].weight, aligner.subject_layers.convs[s].weight)
    assert float(tuned[2].weight.abs().sum()) == 0
    cpu = torch.device("cpu")
    for i, subject in enumerate(inputs["subjects"]):
        fmri, latents = inputs["fmri_paths"][i], adaptor_outputs(tmp_path / "align")["latent_paths"][i]
        _, tokens, _ = student_tokens(
            str(student_dir), inputs["teacher_dir"], subject, fmri, latents, read_captions(captions), "", cpu
        )
        windows = next(student_inputs("encoder", [fmri], [latents], "test", student.window)[0].batches(1000))
        torch.testing.assert_close(tokens, student.encode(windows, subject=subject), rtol=0, atol=0)
        other = inputs["subjects"][(i + 1) % 3]
        assert not torch.equal(tokens, student.encode(windows, subject=other))
    # the nearest-train pool reads each labelled subject's training windows through its own layer
    latent_paths = adaptor_outputs(tmp_path / "align")["latent_paths"]
    nearest_train_pool(
        subjects=["sub-01", "sub-02"],
        fmri_paths=inputs["fmri_paths"][:2],
        latent_paths=latent_paths[:2],
        teacher_dir=inputs["teacher_dir"],
        student_dir=str(student_dir),
        out_path=tmp_path / "pool.h5",
        device="cpu",
        seed=0,
    )
    expected = [
        pooled(
            student.encode(next(student_inputs("encoder", [fmri], [latents], "train", 2)[0].batches(1000)), subject=s)
        )
        for fmri, latents, s in zip(inputs["fmri_paths"][:2], latent_paths[:2], ("sub-01", "sub-02"), strict=True)
    ]
    torch.testing.assert_close(read_pool(str(tmp_path / "pool.h5"))[0], torch.cat(expected), rtol=0, atol=0)
