"""What the aligner trains and the loss it minimises, as importable parts: :func:`build_trainables` (the
aligner and the heads its configured terms need) and :class:`AlignmentObjective` (one step's weighted terms,
each a named component of ``align.loss``). :func:`~llm4brain.align.train.train_brain_aligner` feeds them
streamed batches; ``benchmarks/gpu.py`` feeds them synthetic ones, so the benchmark times the same objective.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from llm4brain.align.adversarial import SubjectAdversary, dann_coefficient
from llm4brain.align.losses import coral, cross_subject, info_nce, mmd
from llm4brain.align.model import BrainAligner
from llm4brain.align.terms import ADAPTATION_TERMS, LOSS_TERMS
from llm4brain.distributed import World, gather
from llm4brain.models.mbm import MaskedBrainModel
from llm4brain.sections import AlignConfig, EncoderConfig

if TYPE_CHECKING:
    from llm4brain.models.instructblip_video import InstructionQFormer
    from llm4brain.models.video_llm import VideoQFormer


def alignment_terms(
    model: BrainAligner,
    n_subjects: int,
    pick: torch.Tensor,
    inputs: torch.Tensor,
    video: torch.Tensor,
    shard: World = World(),
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The labelled loss terms for clips ``pick`` seen by each of ``n_subjects`` (``inputs`` stacked subject
    by subject: the aligner's subjects 0 … n_subjects - 1), and the pooled brain tokens of the global batch."""
    subjects = torch.arange(n_subjects, device=inputs.device).repeat_interleave(len(inputs) // n_subjects)
    return alignment_losses(model(inputs, subjects), model.logit_scale, n_subjects, pick, video, shard)


def alignment_losses(
    brain: torch.Tensor,
    logit_scale: torch.Tensor,
    n_subjects: int,
    pick: torch.Tensor,
    video: torch.Tensor,
    shard: World = World(),
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """:func:`alignment_terms` of brain tokens (S·B, Q, H) computed already. When they are ``shard``'s share
    of a data-parallel batch, the token MSE (a per-sample mean) stays local and the batch-coupled terms see
    the batch gathered from every process (:mod:`llm4brain.distributed`)."""
    token_mse = ((brain - video.repeat(n_subjects, 1, 1)) ** 2).mean()
    pooled = brain.mean(1).view(n_subjects, len(pick), -1)  # (S, B, H)
    clips = video.mean(1)
    if shard.size > 1:
        pooled = gather(pooled.transpose(0, 1)).transpose(0, 1)
        pick, clips = gather(pick), gather(clips)
    same = pick[None, :] == pick[:, None]
    flat = pooled.flatten(0, 1)
    return {
        "contrastive": info_nce(flat, clips, same.repeat(n_subjects, 1), logit_scale),
        "token_mse": token_mse,
        "cross_subject": cross_subject(pooled),
    }, flat


def uses_heldout_fmri(align: AlignConfig, heldout: Sequence[str]) -> bool:
    """Whether a step also reads held-out windows: there are held-out subjects and an adaptation term is on."""
    return bool(heldout) and any(getattr(align.loss, term) > 0 for term in ADAPTATION_TERMS)


@dataclass
class Trainables:
    """The modules the align stage trains: the aligner, and the heads its terms need (masked modelling
    of the held-out windows, the subject adversary), or None."""

    aligner: BrainAligner
    target_mbm: MaskedBrainModel | None = None
    adversary: SubjectAdversary | None = None

    def modules(self) -> torch.nn.ModuleDict:
        """What ``fit`` optimises and checkpoints, named as its checkpoints name them."""
        trained = torch.nn.ModuleDict({"aligner": self.aligner})
        if self.target_mbm is not None:
            trained["target_mbm"] = self.target_mbm  # its encoder is the aligner's
        if self.adversary is not None:
            trained["subject_adversary"] = self.adversary
        return trained


def build_trainables(
    *,
    grid: tuple[int, ...],
    encoder: EncoderConfig,
    align: AlignConfig,
    qformer: VideoQFormer | InstructionQFormer,
    token_width: int,
    subjects: Sequence[str],
    uses_heldout: bool,
    device: torch.device,
    pretrained: str | None = None,
) -> Trainables:
    """The aligner for fMRI volumes of ``grid`` (``encoder``, the ``align`` section ``align``; from
    the ``pretrained`` encoder if given) and the heads its loss terms need. ``subjects``: the labelled ones,
    then the held-out ones, the order of the subject indices every step passes (the aligner's subject layers,
    the adversary's classes). The adversary reads pooled tokens of ``token_width`` (the video tokens' H);
    ``uses_heldout``: held-out windows reach the step (:func:`uses_heldout_fmri`). Built in this order, so
    the same seed gives the same initial weights."""
    weights = align.loss
    aligner = BrainAligner(grid, encoder, align, qformer, pretrained, subjects).to(device)
    out = Trainables(aligner)
    if uses_heldout and weights.target_mbm > 0:  # masked modelling of the held-out windows
        head = align.target_mbm
        decoder = head.decoder
        out.target_mbm = MaskedBrainModel(
            aligner.encoder, decoder.dim, decoder.depth, decoder.num_heads, head.mask_ratio
        ).to(device)
    if weights.adversarial > 0:  # a subject classifier (labelled + held-out) behind gradient reversal
        out.adversary = SubjectAdversary(token_width, len(subjects)).to(device)
    return out


class AlignmentObjective:
    """One training step's loss: the labelled terms (contrastive, token MSE, cross-subject agreement) and, on
    the held-out windows, the domain term (MMD or CORAL), masked modelling and the subject adversary, each
    weighted by ``align.loss``. Returns the loss and every term's value for the train log.

    Args:
        trainables: what :func:`build_trainables` built.
        align: the ``align`` section (``loss``, ``domain_method``).
        n_labelled: labelled subjects in each batch (stacked subject by subject).
        steps: training steps in all, which the adversary's reversal coefficient ramps over.
        generator: the masked-modelling masks' generator (checkpointed with the run).
        shard: this process's share of every batch.
    """

    def __init__(
        self,
        trainables: Trainables,
        align: AlignConfig,
        n_labelled: int,
        steps: int,
        generator: torch.Generator,
        shard: World,
    ) -> None:
        self.trainables = trainables
        self.weights = {term: getattr(align.loss, term) for term in LOSS_TERMS}  # every term, by name
        self.domain_loss = mmd if align.domain_method == "mmd" else coral
        self.n_labelled, self.steps, self.generator, self.shard = n_labelled, steps, generator, shard

    def __call__(
        self,
        step: int,
        pick: torch.Tensor,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        heldout_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one step: clips ``pick`` (B,) seen by every labelled subject (``inputs``, S·B windows
        stacked subject by subject) and their video tokens ``targets`` (B, Q, H). When held-out windows reach
        the step, ``heldout_batch`` returns them (B, W, ...) with each one's subject index (B,); it is called
        after the labelled terms, so a stream that draws from torch's generator draws in a fixed place."""
        model, target_mbm, adversary = self.trainables.aligner, self.trainables.target_mbm, self.trainables.adversary
        model.train()
        terms, pooled = alignment_terms(model, self.n_labelled, pick, inputs, targets, self.shard)
        target = None  # the held-out windows' pooled tokens and subject indices, for the adversary
        if heldout_batch is not None:
            heldout, subjects = heldout_batch()
            if self.weights["domain"] > 0 or adversary is not None:
                target_pooled = gather(model(heldout, subjects).mean(1))  # the global batch, like ``pooled``
                target = target_pooled, gather(subjects)
            if self.weights["domain"] > 0:
                terms["domain"] = self.domain_loss(pooled, target_pooled)
            if target_mbm is not None:
                terms["target_mbm"] = target_mbm.train()(heldout, self.generator, self.shard)[0]
        if adversary is not None:
            coefficient = dann_coefficient(step, self.steps)
            terms["adversarial"] = adversary.loss(pooled, self.n_labelled, target, coefficient)
        return self.weighted(terms), {name: value.item() for name, value in terms.items()}

    def weighted(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The terms' sum, each times its ``align.loss`` weight."""
        return sum(self.weights[name] * value for name, value in terms.items())
