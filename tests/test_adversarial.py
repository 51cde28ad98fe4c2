"""Adversarial subject invariance: the gradient-reversal layer, the subject classifier and the aligner's
loss term."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from llm4brain.align.adversarial import SubjectAdversary, dann_coefficient, heldout_subjects, reverse_gradient


def test_gradient_reversal_flips_and_scales_the_gradient_only():
    x = torch.randn(5, 3, requires_grad=True)
    weights = torch.randn(5, 3)
    y = reverse_gradient(x, 0.5)
    torch.testing.assert_close(y, x)
    (y * weights).sum().backward()
    torch.testing.assert_close(x.grad, -0.5 * weights)


def test_dann_coefficient_ramps_from_zero_towards_one():
    values = [dann_coefficient(step, 100) for step in (0, 10, 50, 100)]
    assert values[0] == 0.0 and values == sorted(values) and 0.99 < values[-1] < 1.0


def separable(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three subjects' pooled tokens (N, 8), each subject's shifted along its own axis."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat_interleave(n)
    return torch.randn(3 * n, 8, generator=g) + 3.0 * torch.eye(8)[labels], labels


def test_classifier_learns_separable_subjects():
    torch.manual_seed(0)
    tokens, labels = separable()
    adversary = SubjectAdversary(8, 3)
    optimiser = torch.optim.Adam(adversary.parameters(), lr=1e-2)
    first = None
    for _ in range(100):
        loss = adversary.loss(tokens[:128], 2, (tokens[128:], labels[128:]))  # subjects 0, 1 labelled; 2 held out
        first = first if first is not None else loss.item()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.2 * first
    assert (adversary(tokens).argmax(1) == labels).float().mean() > 0.95


def test_reversed_gradient_keeps_the_classifier_from_telling_subjects_apart():
    """An encoder trained only through the reversal layer keeps moving its tokens away from what the classifier
    learns (the classifier's loss stays high); with the gradient not reversed it helps the classifier."""

    def train(reverse: bool) -> float:
        torch.manual_seed(0)
        tokens, labels = separable()
        encoder, adversary = torch.nn.Linear(8, 8), SubjectAdversary(8, 3)
        optimiser = torch.optim.Adam([*encoder.parameters(), *adversary.parameters()], lr=1e-2)
        losses = []
        for _ in range(200):
            loss = torch.nn.functional.cross_entropy(adversary(encoder(tokens), 1.0 if reverse else -1.0), labels)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        return sum(losses[-50:]) / 50

    assert train(reverse=True) > 0.5 > train(reverse=False)


def test_heldout_subject_of_each_row_stream_unit():
    units = torch.tensor([0, 9, 10, 11, 24, 3])
    assert heldout_subjects(units, [10, 15], 2).tolist() == [2, 2, 3, 3, 3, 2]


@pytest.mark.parametrize("weights", [{"adversarial": 0.5}, {"adversarial": 0.5, "domain": 0.0}])
def test_pretrain_adaptor_trains_the_adversary_on_every_subject_with_a_reversed_ramped_gradient(
    tmp_path, monkeypatch, weights
):
    """With or without MMD, every step's classifier sees each labelled subject's batch and a held-out batch
    labelled as the held-out subject, behind a reversal whose coefficient is Ganin's ramp (never negative: a
    flipped sign would help the classifier), and the log holds exactly that step's cross-entropy."""
    from test_stream import adaptor_inputs, adaptor_outputs, typed

    import llm4brain.align.adversarial as adversarial
    from llm4brain.align.train import train_brain_aligner

    calls: list[tuple[list[int], float]] = []
    coefficients: list[float] = []
    cross_entropy, forward = adversarial.F.cross_entropy, SubjectAdversary.forward

    def recorded_cross_entropy(logits, labels):
        loss = cross_entropy(logits, labels)
        calls.append((torch.bincount(labels, minlength=logits.shape[1]).tolist(), loss.item()))
        return loss

    def recorded_forward(self, pooled, coefficient=1.0):
        coefficients.append(coefficient)
        return forward(self, pooled, coefficient)

    monkeypatch.setattr(adversarial.F, "cross_entropy", recorded_cross_entropy)
    monkeypatch.setattr(SubjectAdversary, "forward", recorded_forward)
    inputs = adaptor_inputs(tmp_path)
    inputs["align"]["loss"] = {**inputs["align"]["loss"], **weights}
    steps, batch = inputs["align"]["train"]["steps"], inputs["align"]["train"]["batch_size"]
    train_brain_aligner(**typed(inputs), **adaptor_outputs(tmp_path / "out"))
    log = pd.read_csv(tmp_path / "out" / "model" / "train_log.tsv", sep="\t")
    # two labelled subjects, then sub-03 (index 2): each step's classifier is told all three apart
    assert [counts for counts, _ in calls] == [[batch, batch, batch]] * steps
    assert coefficients == pytest.approx([dann_coefficient(step, steps) for step in range(steps)])
    assert log["adversarial"].tolist() == pytest.approx([value for _, value in calls], rel=1e-6)
    assert ("domain" in log.columns) == (weights.get("domain", 0.5) > 0)
