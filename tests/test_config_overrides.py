"""``--config`` values arrive as text from Snakemake; they are read as the schema types each key."""

from __future__ import annotations

from pathlib import Path

import yaml

from llm4brain.config_overrides import typed

SCHEMA = yaml.safe_load((Path(__file__).parents[1] / "config" / "schema.yaml").read_text())


def test_text_becomes_the_type_the_schema_gives_each_key():
    config = {
        "replicates": ["0", "1"],
        "align": {"train": {"steps": "100", "lr": "3e-4"}, "loss": {"domain": "0.25"}, "heldout": ["sub-03"]},
        "fmri": {"zscore": "false", "reliability": {"threshold": "0.2"}},
        "evaluate": {"bertscore": {"model": "null", "num_layers": "17"}, "sentence_embedding": {"model": "m/x"}},
        "data": {"subjects": ["01", "02"], "segments": {"train": ["1"], "test": ["2"], "subject_train": {"01": ["3"]}}},
    }
    assert typed(config, SCHEMA) == {
        "replicates": [0, 1],
        "align": {"train": {"steps": 100, "lr": 3e-4}, "loss": {"domain": 0.25}, "heldout": ["sub-03"]},
        "fmri": {"zscore": False, "reliability": {"threshold": 0.2}},
        "evaluate": {"bertscore": {"model": None, "num_layers": 17}, "sentence_embedding": {"model": "m/x"}},
        # where the schema allows text, text stays: subjects and segments named by digits are names
        "data": {"subjects": ["01", "02"], "segments": {"train": ["1"], "test": ["2"], "subject_train": {"01": ["3"]}}},
    }


def test_text_of_the_wrong_type_is_left_for_validation_to_name():
    config = {"align": {"train": {"steps": "abc", "threads": "1.5"}}, "fmri": {"zscore": "maybe"}}
    assert typed(config, SCHEMA) == config
    assert typed({"unknown": {"steps": "1"}}, SCHEMA) == {"unknown": {"steps": "1"}}  # unknown keys: untouched
