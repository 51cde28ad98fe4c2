"""The alignment loss terms and the ablations that switch them off: the one list that the schema
(``align.loss``, ``align.ablations``, ``instruct.ablations``), the workflow (``ablate_adaptor``,
``ablate_instruct``) and the aligner's objective follow. Torch-free, so the Snakemake files import it; a test
checks that the schema agrees.
"""

from __future__ import annotations

from typing import Any

# the weighted terms of the aligner's objective, keys of align.loss and of the train log's columns
LOSS_TERMS = ("contrastive", "token_mse", "cross_subject", "domain", "target_mbm", "adversarial")
# the terms that adapt toward the held-out subjects: they read those subjects' unlabelled fMRI
ADAPTATION_TERMS = ("domain", "target_mbm", "adversarial")
# not a loss term: the held-out subjects' input transform (align.functional_alignment), which ablations switch off
FUNCTIONAL_ALIGNMENT = "functional_alignment"

# each align ablation switches these off (an extra pretrain_adaptor run: rule ablate_adaptor)
ABLATIONS: dict[str, tuple[str, ...]] = {
    "no_contrastive": ("contrastive",),
    "no_token_mse": ("token_mse",),
    "no_cross_subject": ("cross_subject",),
    # every adaptation toward the held-out subjects, functional alignment included
    "no_domain_adaptation": (*ADAPTATION_TERMS, FUNCTIONAL_ALIGNMENT),
    "no_adversarial": ("adversarial",),
    "no_functional_alignment": (FUNCTIONAL_ALIGNMENT,),
}
# each instruct ablation trains the student with these instruct keys changed (rule ablate_instruct)
INSTRUCT_ABLATIONS: dict[str, dict[str, Any]] = {"no_distillation": {"distill_weight": 0.0}}


def ablated_align(align: dict[str, Any], ablation: str) -> dict[str, Any]:
    """The align section with ``ablation``'s loss terms weighted zero (and functional alignment off)."""
    terms = ABLATIONS[ablation]
    ablated = {**align, "loss": {**align["loss"], **{term: 0.0 for term in terms if term in LOSS_TERMS}}}
    if FUNCTIONAL_ALIGNMENT in terms:
        ablated[FUNCTIONAL_ALIGNMENT] = {**align[FUNCTIONAL_ALIGNMENT], "method": "none"}
    return ablated
