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
    with pytest.raises(ValueError, match=r"^model/config.json: AlignLossConfig: unknown key\(s\) \['domian'\]"):
        AlignConfig.from_dict({"loss": {"domian": 0.25}}, source="model/config.json")  # a saved model's file


# where plain data is the point: DAG-build helpers that shape the rules' params (what reruns hash), the
# artifact header and resume fingerprints (which hash what a section records, its to_dict), the section
# constructors
PLAIN_DATA = {
    ("align/terms.py", "ablated_align"),
    ("evaluate/keys.py", "decoding_keys"),
    ("artifacts.py", "atomic_h5"),
    ("artifacts.py", "write_header"),
    ("resume.py", "without_devices"),
    ("resume.py", "__init__"),
    ("section.py", "from_dict"),
    ("fmri/runs.py", "from_data"),
}


def object_keys(properties: dict) -> set[str]:
    """Every key of the schema, at any depth, whose value is an object (a section or a subsection)."""
    found = set()
    for key, node in properties.items():
        if node.get("type") == "object" or "$ref" in node or "properties" in node:
            found.add(key)
        for child in (node, node.get("items") or {}):
            found |= object_keys(child.get("properties") or {})
    return found


def test_no_library_function_takes_a_config_section_as_a_dict():
    """A section reaches the library typed (``llm4brain.sections``), so mypy checks every key read: a
    parameter named ``params`` or after a section or subsection (or ``layout``, the data section's fragment
    that preprocessing reads), annotated as a dict or left untyped, fails here."""
    import ast

    sections = {*object_keys(SCHEMA) - {"kwargs"}, "layout", "params", "encoder_params"}  # kwargs: free-form
    package = REPO / "src" / "llm4brain"
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if (str(path.relative_to(package)), node.name) in PLAIN_DATA:
                continue
            for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
                annotation = ast.unparse(arg.annotation) if arg.annotation else "Any"
                if arg.arg in sections and ("[str, Any]" in annotation or annotation.startswith("Any")):
                    found.append(f"{path.relative_to(package)}:{node.lineno} {node.name}({arg.arg}: {annotation})")
    assert not found, found
