"""The study design a config describes and the DAG-build checks (``llm4brain.design``), without Snakemake:
each cross-key error names its key, and the held-out subjects follow align.heldout or the rotation."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from conftest import schema_defaults

from llm4brain.design import Design, check_config

BASE = schema_defaults()  # sub-01..03 watched seg01; test01 is the test segment


def config(**changes: Any) -> dict[str, Any]:
    """The schema's defaults with ``section__key`` (nested with ``__``) values changed."""
    out = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, key = path.split("__")
        node = out
        for parent in parents:
            node = node[parent]
        node[key] = value
    return out


def test_a_valid_design_passes_and_rotation_holds_out_seed_mod_n():
    check_config(config(align__heldout=["sub-03"]))
    rotating = Design.from_config(config(align__heldout_rotation=True, replicates=[0, 1, 2, 3]))
    assert rotating.heldout_by_replicate() == {0: ["sub-01"], 1: ["sub-02"], 2: ["sub-03"], 3: ["sub-01"]}
    assert Design.from_config(config(align__heldout=["sub-02"])).heldout(5) == ["sub-02"]
    own = Design.from_config(config(data__segments__subject_train={"sub-03": ["own01"]}))
    assert own.subject_segments("sub-03") == {"train": ["own01"], "test": ["test01"]}
    assert own.subject_segments("sub-01")["train"] == ["seg01"] and own.training_segments == ["seg01", "own01"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"data__subjects": ["sub-01", "sub-01"]}, r"data.subjects lists \['sub-01'\] more than once"),
        ({"data__segments__test": ["seg01"]}, r"\['seg01'\] are both train and test"),
        ({"data__segments__train": ["seg01", "seg01"]}, r"data.segments lists \['seg01'\] more than once"),
        ({"align__heldout": ["sub-09"]}, "align.heldout names unknown subjects"),
        ({"align__heldout": ["sub-01", "sub-02", "sub-03"]}, "holds out every subject"),
        ({"align__heldout_rotation": True, "align__heldout": ["sub-01"]}, "leave align.heldout empty"),
        ({"align__heldout_rotation": True, "data__subjects": ["sub-01"]}, "needs two subjects or more"),
        ({"data__segments__subject_train": {"sub-07": ["own01"]}}, "subject_train names unknown subjects"),
        (
            {"data__segments__subject_train": {"sub-01": ["own01"]}, "align__heldout": ["sub-03"]},
            "the labelled subjects share no training segment",
        ),
        (
            {
                "data__segments__subject_train": {"sub-03": ["own01"]},
                "align__heldout": ["sub-03"],
                "align__functional_alignment__method": "srm",
            },
            "sub-03 watched no training segment the labelled subjects watched",
        ),
        (
            {
                "align__heldout_rotation": True,
                "replicates": [0, 1],
                "align__functional_alignment__method": "srm",
                "align__functional_alignment__reference": "sub-02",
            },
            r"reference: sub-02 is held out when align.heldout_rotation holds out \['sub-02'\]",
        ),
        ({"data__stimuli": "videos"}, "data.stimuli: the demo simulates its data"),
        ({"align__train__devices": 3}, "does not divide evenly between 3 devices"),
        ({"instruct__llm__quantization": "4bit", "instruct__llm__tuning": "full"}, "cannot be fully fine-tuned"),
    ],
)
def test_each_cross_key_error_names_its_key(changes, message):
    with pytest.raises(ValueError, match=message):
        check_config(config(**changes))
