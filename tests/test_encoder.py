"""The fMRI encoder: tokenizers, windows, masked brain modelling, pretrained checkpoints and encoder adaptors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import DEFAULTS
from safetensors.torch import save_file
from test_models import tiny_teacher
from timm.models.vision_transformer import Block

from llm4brain.align.model import BrainAligner
from llm4brain.align.windows import windows
from llm4brain.artifacts import ArtifactError
from llm4brain.models.fmri_encoder import FmriEncoder, build_encoder
from llm4brain.models.mbm import MaskedBrainModel
from llm4brain.models.pretrained_encoder import load_pretrained_encoder
from llm4brain.sections import AlignConfig, EncoderConfig, TrainConfig
from llm4brain.training import fit

ENCODER = {
    **DEFAULTS["encoder"],
    "tokenizer": {"channels": 4, "patch": 4, "vector_patch": 4},
    "dim": 32,
    "depth": 2,
    "num_heads": 2,
    "dropout": 0.0,
}


@pytest.mark.parametrize(
    "grid, window, n_tokens",
    [((9, 8, 6), 1, 3 * 2 * 2), ((8, 8, 8), 2, 8), ((16, 4, 4), 3, 4), ((10,), 1, 3), ((64,), 2, 16)],
)
def test_tokenizer_shapes(grid, window, n_tokens):
    encoder = build_encoder(grid, EncoderConfig.from_dict({**ENCODER, "window": window}))
    x = torch.randn(3, window, *grid)
    assert encoder(x).shape == (3, n_tokens, 32)
    patches = encoder.tokenizer.patchify(x)
    assert patches.shape == (3, n_tokens, window * (4 ** len(grid)))


def test_patchify_follows_token_order():
    """Token (i, j, k) of the 3-D tokenizer covers voxels [4i:4i+4, 4j:4j+4, 4k:4k+4] of every window volume."""
    encoder = build_encoder((8, 8, 4), EncoderConfig.from_dict({**ENCODER, "window": 2}))
    x = torch.arange(2 * 8 * 8 * 4, dtype=torch.float32).reshape(1, 2, 8, 8, 4)
    patches = encoder.tokenizer.patchify(x)[0]
    token = 1 * 2 * 1 + 1 * 1 + 0  # (i=1, j=1, k=0) in a 2 × 2 × 1 token grid
    expected = x[0, :, 4:8, 4:8, 0:4].reshape(-1)
    assert torch.equal(patches[token], expected)


def test_vector_tokenizer_patches_like_mind_vis():
    """Grayordinate vectors get MinD-Vis' 1-D patches: ceil(V / p) tokens, each from p consecutive voxels."""
    encoder = FmriEncoder((10,), 1, 4, 4, 32, 1, 2, 2.0, 0.0, vector_patch=4)
    assert encoder(torch.randn(3, 1, 10)).shape == (3, 3, 32)  # padded to 12 → 3 patches
    x = torch.zeros(1, 1, 10)
    base = encoder.tokenizer(x)
    x[0, 0, 5] = 1.0  # voxel 5 lies in patch 1 only
    changed = (encoder.tokenizer(x) - base).abs().sum(-1)[0]
    assert changed[1] > 0 and changed[0] == 0 and changed[2] == 0


def test_windows_follow_each_run():
    """Rows are ordered by segment, run, TR: a window never crosses into another run or segment."""
    keys = [("a", 0), ("a", 1), ("a", 2), ("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    samples = np.arange(len(keys), dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    out = windows(samples, keys, 2)
    assert out.shape == (7, 2, 3)
    assert out[:, :, 0].tolist() == [[0, 1], [1, 2], [2, 2], [3, 4], [4, 4], [5, 6], [6, 6]]
    assert windows(samples, keys, 1).base is not None  # window 1 is a view


def test_masking_ratio_is_honoured():
    model = MaskedBrainModel(build_encoder((16, 16, 8), EncoderConfig.from_dict(ENCODER)), 16, 1, 2, mask_ratio=0.75)
    x = torch.randn(4, 1, 16, 16, 8)
    loss, mask = model(x, torch.Generator().manual_seed(0))
    n_tokens = 4 * 4 * 2
    assert mask.shape == (4, n_tokens) and (mask.sum(1) == n_tokens - int(n_tokens * 0.25)).all()
    assert len({tuple(row.tolist()) for row in mask}) > 1  # a fresh mask per sample
    loss.backward()
    assert torch.isfinite(loss) and model.encoder.tokenizer.proj.weight.grad is not None


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_masked_modelling_learns_structure(precision):
    """On samples that share a spatial pattern, the masked loss falls well below its start in a few steps, in
    full precision and under bf16 autocast (what ``precision: auto`` gives on a GPU; CPU autocast here)."""
    generator = torch.Generator().manual_seed(0)
    pattern = torch.randn(1, 1, 8, 8, 4, generator=generator)
    data = pattern * torch.randn(64, 1, 1, 1, 1, generator=generator) + 0.1 * torch.randn(
        64, 1, 8, 8, 4, generator=generator
    )
    model = MaskedBrainModel(build_encoder((8, 8, 4), EncoderConfig.from_dict(ENCODER)), 16, 1, 2, mask_ratio=0.5)
    history = fit(
        model,
        lambda step: (model(data[torch.randint(64, (16,), generator=generator)], generator)[0], {}),
        TrainConfig(steps=200, lr=3e-3, warmup=5, checkpoint_every=0, precision=precision),
        "mbm",
    )
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast keeps fp32 master weights
    assert history["loss"].iloc[-10:].mean() < 0.3 * history["loss"].iloc[:5].mean()


def mind_vis_state(encoder: FmriEncoder, with_cls: bool = True) -> dict[str, torch.Tensor]:
    """A state dict named and shaped as MinD-Vis' MAE for fMRI (encoder + decoder + CLS)."""
    dim = encoder.tokenizer.pos_embed.shape[-1]
    n = encoder.tokenizer.pos_embed.shape[1]
    state = {
        "patch_embed.proj.weight": torch.randn(dim, 1, encoder.tokenizer.patch),
        "patch_embed.proj.bias": torch.randn(dim),
        "pos_embed": torch.randn(1, n + int(with_cls), dim),
        "cls_token": torch.randn(1, 1, dim),
        "norm.weight": torch.randn(dim),
        "norm.bias": torch.randn(dim),
        "mask_token": torch.randn(1, 1, 16),
        "decoder_embed.weight": torch.randn(16, dim),
    }
    for i in range(len(encoder.blocks)):
        state.update(
            {f"blocks.{i}.{k}": torch.randn_like(v) for k, v in Block(dim, 2, 2.0, qkv_bias=True).state_dict().items()}
        )
    return state


def test_mind_vis_checkpoint_loads_with_report(tmp_path):
    encoder = build_encoder((37,), EncoderConfig.from_dict(ENCODER))
    state = mind_vis_state(encoder)
    torch.save({"model": state}, tmp_path / "fmri_encoder.pth")
    missing, unexpected = load_pretrained_encoder(encoder, tmp_path / "fmri_encoder.pth")
    assert missing == [] and sorted(unexpected) == ["cls_token", "decoder_embed.weight", "mask_token"]
    assert torch.equal(encoder.tokenizer.proj.weight, state["patch_embed.proj.weight"])
    assert torch.equal(encoder.tokenizer.pos_embed, state["pos_embed"][:, 1:])  # the CLS position dropped
    assert torch.equal(encoder.blocks[1].attn.qkv.weight, state["blocks.1.attn.qkv.weight"])
    save_file({f"module.{k}": v for k, v in state.items()}, tmp_path / "wrapped.safetensors")
    again = build_encoder((37,), EncoderConfig.from_dict(ENCODER))
    load_pretrained_encoder(again, tmp_path / "wrapped.safetensors")
    assert torch.equal(again.norm.weight, state["norm.weight"])


class PickledConfig:
    """Stands in for the config object MinD-Vis pickles next to its weights."""


def test_mind_vis_checkpoint_refusals(tmp_path):
    encoder = build_encoder((37,), EncoderConfig.from_dict(ENCODER))
    wide = build_encoder((37,), EncoderConfig.from_dict({**ENCODER, "dim": 64, "num_heads": 2}))
    torch.save({"model": mind_vis_state(wide)}, tmp_path / "wide.pth")
    with pytest.raises(
        ArtifactError,
        match=r"wide\.pth: patch_embed\.proj\.weight has shape \(64, 1, 4\) but the "
        r"encoder's tokenizer\.proj\.weight is \(32, 1, 4\)",
    ):
        load_pretrained_encoder(encoder, tmp_path / "wide.pth")
    torch.save({"model": mind_vis_state(encoder), "config": PickledConfig()}, tmp_path / "pickled.pth")
    with pytest.raises(ArtifactError, match=r"pickled\.pth: cannot be read with torch\.load\(weights_only=True\)"):
        load_pretrained_encoder(encoder, tmp_path / "pickled.pth")
    with pytest.raises(ArtifactError, match="does not exist"):
        load_pretrained_encoder(encoder, tmp_path / "missing.pth")


@pytest.mark.parametrize("kind", ["bottleneck", "lora"])
def test_encoder_adaptors_start_as_identity_and_leave_the_base_frozen(tmp_path, kind):
    """With encoder_tuning adaptor, the pretrained encoder is unchanged at init (adaptor scale 0, LoRA's
    zero up-projection) and stays bit-identical through training; only adaptors (and the new parts) move."""
    qformer, _ = tiny_teacher()
    pretrained = build_encoder((8, 8, 4), EncoderConfig.from_dict(ENCODER))
    save_file(pretrained.state_dict(), tmp_path / "encoder.safetensors")
    align = {
        **DEFAULTS["align"],
        "encoder_tuning": "adaptor",
        "adaptor": {**DEFAULTS["align"]["adaptor"], "kind": kind, "scale_init": 0.0},
    }
    aligner = BrainAligner(
        (8, 8, 4),
        EncoderConfig.from_dict(ENCODER),
        AlignConfig.from_dict(align),
        qformer,
        tmp_path / "encoder.safetensors",
    ).eval()
    x = torch.randn(4, 1, 8, 8, 4)
    with torch.no_grad():
        torch.testing.assert_close(aligner.encoder(x), pretrained.eval()(x), rtol=0, atol=0)
    frozen = {k: v.clone() for k, v in aligner.encoder.named_parameters() if not v.requires_grad}
    trainable = {k: v.clone() for k, v in aligner.encoder.named_parameters() if v.requires_grad}
    assert frozen and trainable and all(("adaptor" in k) or ("lora_" in k) for k in trainable)
    fit(
        aligner,
        lambda step: ((aligner.train()(x) ** 2).mean(), {}),
        TrainConfig(steps=3, warmup=0, checkpoint_every=0),
        "adaptor",
    )
    after = dict(aligner.encoder.named_parameters())
    assert all(torch.equal(after[k], v) for k, v in frozen.items())
    assert any(not torch.equal(after[k], v) for k, v in trainable.items())


def test_aligner_reloads_with_encoder_adaptors(tmp_path):
    from llm4brain.align.model import load_aligner, save_aligner

    qformer, _ = tiny_teacher()
    save_file(
        build_encoder((8, 8, 4), EncoderConfig.from_dict({**ENCODER, "window": 2})).state_dict(),
        tmp_path / "encoder.safetensors",
    )
    align = {**DEFAULTS["align"], "encoder_tuning": "adaptor"}
    aligner = BrainAligner(
        (8, 8, 4),
        EncoderConfig.from_dict({**ENCODER, "window": 2}),
        AlignConfig.from_dict(align),
        qformer,
        tmp_path / "encoder.safetensors",
    )
    save_aligner(tmp_path / "aligner", aligner, "teacher")
    again = load_aligner(tmp_path / "aligner", copy.deepcopy(qformer))
    x = torch.randn(2, 2, 8, 8, 4)
    with torch.no_grad():
        torch.testing.assert_close(aligner.eval()(x), again(x), rtol=0, atol=0)


def test_alignment_step_under_bf16_autocast():
    """One alignment loss (InfoNCE, token MSE, cross-subject, MMD to held-out windows) under bf16 autocast:
    the aligner's linear layers run in bf16, the domain term is computed in fp32, and every gradient is finite."""
    from llm4brain.align.losses import mmd
    from llm4brain.align.objective import alignment_terms
    from llm4brain.runtime import autocast

    qformer, _ = tiny_teacher()
    aligner = BrainAligner((8, 8, 4), EncoderConfig.from_dict(ENCODER), AlignConfig(), qformer).train()
    x, target = torch.randn(8, 1, 8, 8, 4), torch.randn(4, 1, 8, 8, 4)
    video = torch.randn(4, *aligner(target).shape[1:])
    seen = []
    aligner.to_context.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    with autocast(torch.device("cpu"), "bf16"):
        terms, pooled = alignment_terms(aligner, 2, torch.arange(4), x, video)
        terms["domain"] = mmd(pooled, aligner(target).mean(1))
    assert set(seen) == {torch.bfloat16} and terms["domain"].dtype == torch.float32
    sum(terms.values()).backward()
    grads = [p.grad for p in aligner.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() and g.dtype == torch.float32 for g in grads)
