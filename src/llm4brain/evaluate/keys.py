"""Which ``evaluate`` keys only scoring reads: the decoding rules' params leave them out, so a new metric or
checkpoint scores again without decoding again. Torch-free, so the Snakemake files import it; the decoding
rules' params lack these keys, so a decoding function that read one would fail the workflow tests.
"""

from __future__ import annotations

from typing import Any

SCORING_KEYS = (
    "n_bootstrap",
    "n_permutations",
    "identification_ways",
    "bertscore",
    "sentence_embedding",
    "attributes",
)
# the scoring keys whose metric needs a model checkpoint (evaluate.<key>.model)
SEMANTIC_KEYS = ("bertscore", "sentence_embedding")


def decoding_keys(evaluate: dict[str, Any]) -> dict[str, Any]:
    """The evaluate section less :data:`SCORING_KEYS`: what decoding reads."""
    return {key: value for key, value in evaluate.items() if key not in SCORING_KEYS}
