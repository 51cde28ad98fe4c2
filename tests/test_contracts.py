"""The contracts written once in the library and read by the schema and the workflow agree: the alignment
loss terms and ablations (``llm4brain.align.terms``) and the scoring-only evaluate keys
(``llm4brain.evaluate.keys``), and the typed config sections (``llm4brain.sections``) are the schema's."""

from __future__ import annotations

import sys

import pytest
import yaml
from conftest import DEFAULTS, REPO

from llm4brain.align.terms import ABLATIONS, FUNCTIONAL_ALIGNMENT, INSTRUCT_ABLATIONS, LOSS_TERMS, ablated_align
from llm4brain.evaluate.keys import SCORING_KEYS, SEMANTIC_KEYS, decoding_keys
from llm4brain.sections import AlignConfig, TrainConfig, WorkflowConfig

SCHEMA = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())["properties"]


def test_the_schema_names_the_loss_terms_and_ablations_the_library_defines():
    align = SCHEMA["align"]["properties"]
    assert tuple(align["loss"]["properties"]) == LOSS_TERMS
    assert align["ablations"]["items"]["enum"] == list(ABLATIONS)
    assert SCHEMA["instruct"]["properties"]["ablations"]["items"]["enum"] == list(INSTRUCT_ABLATIONS)
    assert FUNCTIONAL_ALIGNMENT in align
    for ablation, terms in ABLATIONS.items():
        assert set(terms) <= {*LOSS_TERMS, FUNCTIONAL_ALIGNMENT}, ablation
    for ablation, changes in INSTRUCT_ABLATIONS.items():
        assert set(changes) <= set(SCHEMA["instruct"]["properties"]), ablation


def test_an_ablation_weighs_its_terms_zero_and_leaves_the_rest():
    align = {"loss": dict.fromkeys(LOSS_TERMS, 0.5), FUNCTIONAL_ALIGNMENT: {"method": "srm", "features": 4}}
    ablated = ablated_align(align, "no_domain_adaptation")
    assert ablated["loss"] == {**align["loss"], "domain": 0.0, "target_mbm": 0.0, "adversarial": 0.0}
    assert ablated[FUNCTIONAL_ALIGNMENT] == {"method": "none", "features": 4}
    assert ablated_align(align, "no_token_mse")[FUNCTIONAL_ALIGNMENT] is align[FUNCTIONAL_ALIGNMENT]
    assert align["loss"]["domain"] == 0.5  # the section itself is left as it was


def test_scoring_keys_are_evaluate_keys_and_decoding_gets_the_others():
    evaluate = SCHEMA["evaluate"]["properties"]
    assert set(SCORING_KEYS) <= set(evaluate) and set(SEMANTIC_KEYS) <= set(SCORING_KEYS)
    assert all("model" in evaluate[key]["properties"] for key in SEMANTIC_KEYS)
    decoding = decoding_keys(dict.fromkeys(evaluate, 1))
    assert set(decoding) == set(evaluate) - set(SCORING_KEYS) and decoding


def test_the_typed_sections_are_the_schemas_objects():
    """src/llm4brain/sections.py is what tools/config_sections.py derives from the schema today: a key added to,
    removed from or retyped in either one alone fails here."""
    sys.path.insert(0, str(REPO / "tools"))
    from config_sections import MODULE, render

    assert MODULE.read_text() == render(yaml.safe_load((REPO / "config" / "schema.yaml").read_text()))


def test_every_section_round_trips_through_its_dataclass_with_the_schemas_defaults():
    config = {
        **DEFAULTS,
        "data": {**DEFAULTS["data"], "segments": {**DEFAULTS["data"]["segments"], "subject_train": {}}},
    }
    typed = WorkflowConfig.from_dict(config)
    assert typed.to_dict() == config
    assert typed.align == AlignConfig() and typed.align.train == TrainConfig() and typed.align.train.steps == 600
    assert WorkflowConfig.from_dict({**config, "align": {"loss": {"domain": 0.25}}}).align.loss.domain == 0.25
    given = {"train": {"steps": 3, "lr": 0.1}, "heldout": ["sub-03"]}  # as a rule passes it: devices left out
    assert AlignConfig.from_dict(given).to_dict() == given and list(AlignConfig.from_dict(given).to_dict()) == [
        "train",
        "heldout",
    ]
    assert AlignConfig.from_dict(given) == AlignConfig(train=TrainConfig(steps=3, lr=0.1), heldout=["sub-03"])
    assert AlignConfig().to_dict() == DEFAULTS["align"]  # built directly: every key
    assert AlignConfig.from_dict({}).to_dict() == {}  # given nothing: records nothing (its config_hash is {}'s)
    with pytest.raises(ValueError, match=r"AlignLossConfig: unknown key\(s\) \['domian'\]"):
        AlignConfig.from_dict({"loss": {"domian": 0.25}})
