"""The random streams of the pipeline, each an offset from the config's one ``seed``.

Every stage seeds its own streams, so a change to one stage's sampling leaves every other stage's draws as
they were, and two streams of one stage never coincide.
"""

from __future__ import annotations

from enum import IntEnum


class SeedOffset(IntEnum):
    """Offsets added to ``seed``; a stage's ``seed_everything`` stream covers dropout and initialisation."""

    DEMO_TEMPLATES = 1  # the demo's shared voxel maps
    VIDEO_LLM = 10
    VIDEO_LLM_BATCHES = 11
    VIDEO_LLM_VALIDATION = 12  # the clips the teacher validates on
    SCMBM = 15
    SCMBM_SAMPLES = 16  # validation rows, sample order and the masks
    SCMBM_VALIDATION_MASKS = 17
    ALIGN = 20
    ALIGN_BATCHES = 21  # validation clips and the masked modelling of held-out windows
    ALIGN_CLIPS = 22  # the labelled (fMRI, clip) stream
    ALIGN_HELDOUT = 23  # the held-out subjects' unlabelled stream
    INSTRUCT = 30
    INSTRUCT_BATCHES = 31
    INSTRUCT_VALIDATION = 32  # the clips the student validates on
    DECODE = 40
    DEMO_SUBJECTS = 100  # + the subject's index: each simulated subject's own maps and noise


RANK_STRIDE = 1 << 20  # above every SeedOffset, within the 32 bits of a seed torch's CPU generator keeps


def rank_seed(seed: int, rank: int) -> int:
    """The global RNG seed of process ``rank`` of a data-parallel job whose stage is seeded with ``seed``:
    its own dropout masks and other per-sample noise (:func:`llm4brain.training.seed_rank`)."""
    return seed + (rank + 1) * RANK_STRIDE
