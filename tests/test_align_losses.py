"""Alignment losses behave as their definitions say."""

from __future__ import annotations

import pytest
import torch

from llm4brain.align.losses import coral, cross_subject, info_nce, mmd
from llm4brain.align.train import identification


def test_info_nce_prefers_matching_pairs():
    torch.manual_seed(0)
    video = torch.randn(8, 16)
    positives = torch.eye(8, dtype=torch.bool)
    scale = torch.tensor(2.0)
    matched = info_nce(video + 0.01 * torch.randn(8, 16), video, positives, scale)
    shuffled = info_nce(video[torch.randperm(8)], video, positives, scale)
    assert matched < shuffled


def test_info_nce_multi_positive_rows():
    video = torch.eye(4)
    brain = torch.cat([torch.eye(4), torch.eye(4)])  # two subjects, same clips
    positives = torch.cat([torch.eye(4), torch.eye(4)]).bool()
    assert info_nce(brain, video, positives, torch.tensor(4.0)) < 0.2


def test_domain_terms_vanish_for_identical_samples():
    x = torch.randn(32, 8)
    assert abs(float(mmd(x, x))) < 1e-5 and abs(float(coral(x, x))) < 1e-8
    assert float(mmd(x, x + 3.0)) > 0.1 and float(coral(x, 3 * x)) > 0


def test_cross_subject_zero_when_subjects_agree():
    z = torch.randn(1, 5, 8).repeat(3, 1, 1)
    assert float(cross_subject(z)) < 1e-10 and float(cross_subject(torch.randn(3, 5, 8))) > 0


def test_identification_perfect_and_chance():
    video = torch.eye(6)[:, None, :]
    scores = identification(video.clone(), video, torch.arange(6).numpy())
    assert scores["top1"] == 1.0 and scores["chance_top1"] == 1 / 6 and scores["n_way"] == 6


def test_identification_of_equal_similarities_is_chance():
    """Zero tokens are equally similar (0) to every clip: chance, not a perfect score, at any n."""
    video = torch.randn(12, 4, 16, generator=torch.Generator().manual_seed(0))
    brain, targets = torch.zeros(12, 4, 16), torch.arange(12).numpy()
    every = identification(brain, video, targets)
    assert every["top1"] == pytest.approx(1 / 12) and every["top5"] == pytest.approx(5 / 12)
    sampled = identification(brain, video, targets, n_way=4, ks=(1, 2))
    assert sampled["top1"] == pytest.approx(1 / 4) and sampled["top2"] == pytest.approx(2 / 4)


def test_n_way_identification():
    """Perfect tokens are identified at any n; random ones near chance; n above the clip count means all."""
    video = torch.randn(80, 4, 16, generator=torch.Generator().manual_seed(0))
    targets = torch.arange(80).numpy()
    perfect = identification(video.clone(), video, targets, n_way=50)
    assert perfect["n_way"] == 50 and perfect["top1"] == 1.0 and perfect["chance_top1"] == 1 / 50
    noise = torch.randn(80, 4, 16, generator=torch.Generator().manual_seed(1))
    chance = identification(noise, video, targets, n_way=50, trials=200)
    assert abs(chance["top5"] - 5 / 50) < 0.03
    assert identification(noise, video, targets, n_way=50, seed=3) == identification(
        noise, video, targets, n_way=50, seed=3
    )
    assert identification(noise, video, targets, n_way=500)["n_way"] == 80


def test_losses_equal_hand_computed_values():
    """InfoNCE, MMD and CORAL on inputs small enough to compute by hand."""
    import math

    eye = torch.eye(2)
    # logits = cos similarity at scale e^0 = 1: each direction is -log(e / (e + 1))
    assert float(info_nce(eye, eye, eye.bool(), torch.tensor(0.0))) == pytest.approx(
        math.log(1 + math.exp(-1)), abs=1e-6
    )
    # source 0, target 1: squared distance 1 is also the median; kernels sum exp(-1 / s) over the scales
    k_st = sum(math.exp(-1 / s) for s in (0.25, 0.5, 1.0, 2.0, 4.0))
    assert float(mmd(torch.zeros(1, 1), torch.ones(1, 1))) == pytest.approx(5 + 5 - 2 * k_st, abs=1e-5)
    # variances 2 (samples 0 and 2) and 0: (2 - 0)² / (4 · 1²)
    assert float(coral(torch.tensor([[0.0], [2.0]]), torch.zeros(2, 1))) == pytest.approx(1.0)


def test_a_section_given_some_weights_weighs_every_term_with_the_schemas_defaults_for_the_rest():
    """A section built from a partial ``loss`` records only the keys it was given (to_dict), but the
    objective and uses_heldout_fmri read every term's weight."""
    from llm4brain.align.objective import AlignmentObjective, uses_heldout_fmri
    from llm4brain.distributed import World
    from llm4brain.sections import AlignConfig, AlignLossConfig

    params = AlignConfig.from_dict({"loss": {"contrastive": 0.0, "domain": 0.25}})
    objective = AlignmentObjective(None, params, 2, 10, torch.Generator(), World())  # type: ignore[arg-type]
    defaults = AlignLossConfig()
    assert objective.weights == {**defaults.to_dict(), "contrastive": 0.0, "domain": 0.25}
    one = torch.tensor(1.0)
    assert objective.weighted({"token_mse": one, "domain": one}) == defaults.token_mse + 0.25
    assert uses_heldout_fmri(params, ["sub-03"]) and not uses_heldout_fmri(params, [])
    quiet = AlignConfig.from_dict({"loss": {"domain": 0.0, "target_mbm": 0.0, "adversarial": 0.0}})
    assert not uses_heldout_fmri(quiet, ["sub-03"])
