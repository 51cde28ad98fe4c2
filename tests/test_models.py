"""Model blocks: the video teacher round-trips exactly, adaptors start as identity, encoder shapes."""

from __future__ import annotations

import copy

import pytest
import torch

from llm4brain.align.model import BrainAligner, load_aligner, save_aligner
from llm4brain.models.adaptors import add_adaptors
from llm4brain.models.captioner import Captioner
from llm4brain.models.fmri_encoder import FmriEncoder
from llm4brain.models.tokenizer import train_word_tokenizer
from llm4brain.models.video_llm import VideoQFormer, build_llm, load_teacher, qformer_config, save_teacher
from llm4brain.sections import AlignConfig, EncoderConfig, TrainConfig, VideoLlmLlmConfig, VideoLlmQformerConfig
from llm4brain.training import fit

CAPTIONS = [
    "one small red circle moving left on a black background",
    "two large blue squares moving up on a white background",
    "three small green triangles moving down on a gray background",
]
TEMPLATE, PROMPT = "###Human: <Video>{video}</Video> {prompt} ###Assistant:", "Describe the clip."
QFORMER = {
    "num_queries": 4,
    "hidden_size": 32,
    "num_layers": 1,
    "num_heads": 2,
    "intermediate_size": 64,
    "dropout": 0.1,
}
LLM = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}
ENCODER = {
    "window": 1,
    "tokenizer": {"channels": 4, "patch": 4, "vector_patch": 4},
    "dim": 32,
    "depth": 1,
    "num_heads": 2,
    "mlp_ratio": 2.0,
    "dropout": 0.0,
}
ALIGN = {
    "encoder_tuning": "full",
    "temperature": 0.07,
    "adaptor": {"kind": "bottleneck", "bottleneck": 8, "scale_init": 1e-3, "lora_r": 4, "lora_alpha": 8},
}


def tiny_teacher(seed: int = 0, dropout: float = 0.1) -> tuple[VideoQFormer, Captioner]:
    torch.manual_seed(seed)
    tokenizer = train_word_tokenizer(CAPTIONS + [TEMPLATE.replace("{video}", " ").format(prompt=PROMPT)])
    qformer = VideoQFormer(
        qformer_config(VideoLlmQformerConfig.from_dict({**QFORMER, "dropout": dropout}), 16),
        num_frames=2,
        num_queries=4,
    )
    captioner = Captioner(
        build_llm(VideoLlmLlmConfig.from_dict(LLM), tokenizer, 64), tokenizer, 32, TEMPLATE, PROMPT, 16
    )
    return qformer.eval(), captioner.eval()


def test_prompt_renders_template():
    _, captioner = tiny_teacher()
    tokens = captioner.tokenizer.convert_ids_to_tokens
    assert tokens(captioner.prefix_ids.tolist()) == ["[BOS]", "###", "human", ":", "<", "video", ">"]
    assert tokens(captioner.suffix_ids.tolist()) == [
        "</",
        "video",
        ">",
        "describe",
        "the",
        "clip",
        ".",
        "###",
        "assistant",
        ":",
    ]
    assert (
        captioner.tokenizer.decode(captioner.tokenizer("two large blue squares")["input_ids"])
        == "two large blue squares"
    )


def test_teacher_learns_and_round_trips(tmp_path):
    qformer, captioner = tiny_teacher()
    clips = torch.randn(3, 2, 5, 16)
    model = torch.nn.ModuleDict({"q": qformer, "c": captioner}).train()
    history = fit(
        model,
        lambda step: (captioner.caption_loss(qformer(clips), CAPTIONS)[0], {}),
        TrainConfig(steps=150, lr=3e-3, weight_decay=0.0, warmup=2, grad_clip=1.0, checkpoint_every=0, accumulate=1),
        "test",
    )
    assert history["loss"].iloc[-5:].mean() < 0.5 * history["loss"].iloc[0]
    model.eval()
    save_teacher(
        tmp_path / "teacher", qformer, captioner, {"template": TEMPLATE, "prompt": PROMPT, "max_caption_tokens": 16}
    )
    qformer2, captioner2, _ = load_teacher(tmp_path / "teacher")
    ids, mask = captioner.encode_captions(CAPTIONS)
    with torch.no_grad():
        a = captioner.caption_logits(qformer(clips), ids, mask)
        b = captioner2.caption_logits(qformer2(clips), ids, mask)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert captioner2.generate(qformer2(clips), 12) == captioner.generate(qformer(clips), 12)
    assert not list((tmp_path / "teacher").rglob("*.bin")) and not list((tmp_path / "teacher").rglob("*.pt"))


def test_adaptors_freeze_base_and_start_near_identity():
    qformer, _ = tiny_teacher()
    adapted = copy.deepcopy(qformer)
    names = add_adaptors(adapted, ("attention.output.dense", "output_query.dense"), bottleneck=4, scale_init=0.0)
    assert names and all(".adaptor." in n for n, p in adapted.named_parameters() if p.requires_grad)
    clips = torch.randn(2, 2, 5, 16)
    with torch.no_grad():
        torch.testing.assert_close(adapted(clips), qformer(clips))


def test_encoder_tokens_shape():
    encoder = FmriEncoder((9, 8, 6), 1, 4, 4, 32, 1, 2, 2.0, 0.0)
    tokens = encoder(torch.randn(3, 1, 9, 8, 6))
    assert tokens.shape == (3, 3 * 2 * 2, 32)  # grid padded to (12, 8, 8) → 3 × 2 × 2 patches


@pytest.mark.parametrize("grid", [(8, 8, 4), (37,)])
def test_aligner_round_trip(tmp_path, grid):
    qformer, _ = tiny_teacher()
    aligner = BrainAligner(grid, EncoderConfig.from_dict(ENCODER), AlignConfig.from_dict(ALIGN), qformer).eval()
    volumes = torch.randn(2, 1, *grid)
    save_aligner(tmp_path / "aligner", aligner, "teacher")
    again = load_aligner(tmp_path / "aligner", qformer)
    with torch.no_grad():
        out = aligner(volumes)
        torch.testing.assert_close(out, again(volumes), rtol=0, atol=0)
    assert out.shape == (2, 4, 32)


@pytest.mark.parametrize("grid", [(8, 8, 4), (37,)])
def test_each_subject_reads_its_own_input_layer(tmp_path, grid):
    """align.subject_kernel: a subject layer starts as the identity (the aligner's output is the shared one's),
    a sample passes only its own subject's layer, in a batch of mixed subjects too, only the layers of the
    subjects in a batch receive gradients, and the layers round-trip with the subjects' names."""
    qformer, _ = tiny_teacher()
    encoder, window = EncoderConfig.from_dict({**ENCODER, "window": 2}), 2
    shared = BrainAligner(grid, encoder, AlignConfig.from_dict(ALIGN), qformer).eval()
    volumes, subjects = torch.randn(4, window, *grid), ["sub-a", "sub-b", "sub-c"]
    with pytest.raises(ValueError, match="subjects whose input layers"):
        BrainAligner(grid, encoder, AlignConfig.from_dict({**ALIGN, "subject_kernel": 1}), qformer)
    layered = BrainAligner(
        grid, encoder, AlignConfig.from_dict({**ALIGN, "subject_kernel": 3}), qformer, None, subjects
    )
    layered.load_state_dict(shared.state_dict(), strict=False)  # the same shared weights; layers at zero
    layered.eval()
    with torch.no_grad():
        torch.testing.assert_close(layered.encode(volumes, "sub-b"), shared.encode(volumes), rtol=0, atol=0)
        for layer in layered.subject_layers.convs:
            layer.weight.normal_(0, 0.2)
        alone = {s: layered.encode(volumes, s) for s in subjects}
        assert not torch.allclose(alone["sub-a"], alone["sub-b"], atol=1e-3)
        mixed = layered(volumes, torch.tensor([2, 0, 1, 0]))
        for i, s in enumerate(["sub-c", "sub-a", "sub-b", "sub-a"]):
            torch.testing.assert_close(mixed[i], alone[s][i], rtol=1e-5, atol=1e-6)
    layered.train()
    out = layered(volumes, torch.tensor([0, 0, 2, 2]))
    (out * torch.randn_like(out)).sum().backward()  # not a plain sum: the Q-Former's last LayerNorm makes it flat
    grads = [layer.weight.grad for layer in layered.subject_layers.convs]
    assert grads[0].abs().sum() > 0 and grads[2].abs().sum() > 0 and grads[1] is None
    with pytest.raises(ValueError, match="not for 'sub-d'"):
        layered.encode(volumes, "sub-d")
    with pytest.raises(ValueError, match="say whose windows"):
        layered(volumes)
    save_aligner(tmp_path / "aligner", layered.eval(), "teacher")
    again = load_aligner(tmp_path / "aligner", qformer)
    assert again.subjects == tuple(subjects)
    torch.testing.assert_close(again.encode(volumes, "sub-c"), alone["sub-c"], rtol=0, atol=0)


def test_encode_clips_reads_bounded_batches_in_the_order_asked(tmp_path, monkeypatch):
    """Clips whose raw tokens would pass BATCH_BYTES in a batch are read and encoded in smaller batches (a
    ViT-g clip is 11.6 MB); the video tokens equal those of each clip encoded alone, in the order asked."""
    import numpy as np

    from llm4brain.artifacts import FeatureFiles, atomic_h5
    from llm4brain.models import video_llm

    qformer = tiny_teacher(dropout=0.0)[0].eval()
    with atomic_h5(tmp_path / "a.h5", "features") as f:
        f.attrs["segment"] = "a"
        f.create_dataset("tokens", data=np.random.default_rng(0).standard_normal((10, 2, 5, 16)).astype(np.float16))
        f.create_dataset("tr", data=np.arange(10, dtype=np.int32))
    features = FeatureFiles([tmp_path / "a.h5"])
    monkeypatch.setattr(video_llm, "BATCH_BYTES", 3 * 4 * 2 * 5 * 16)  # three clips in float32
    sizes: list[int] = []
    read = features.clips
    monkeypatch.setattr(features, "clips", lambda keys: sizes.append(len(keys)) or read(keys))
    keys = [("a", t) for t in (9, 0, 3, 3, 7)]
    tokens = video_llm.encode_clips(qformer, features, keys)
    assert sizes == [3, 2]
    alone = torch.cat([video_llm.encode_clips(qformer, features, [key]) for key in keys])
    torch.testing.assert_close(tokens, alone)
