"""The workflow's config check (llm4brain.config_schema) agrees with snakemake.utils.validate, the helper it
replaces at DAG build, on every shipped config; names the key it rejects; and never lets one config's edits
reach the next through the schema's shared defaults."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from llm4brain.config_schema import ConfigError, read_schema, validate_config

REPO = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO / "config" / "schema.yaml"
SHIPPED = sorted(p for p in (REPO / "config").glob("*.yaml") if p.name != "schema.yaml")


@pytest.mark.parametrize("path", [*SHIPPED, REPO / ".test" / "micro.yaml"], ids=lambda p: p.name)
def test_a_config_is_completed_as_snakemakes_validate_completes_it(path):
    ours = yaml.safe_load(path.read_text())
    theirs = copy.deepcopy(ours)
    validate_config(ours, read_schema(SCHEMA_PATH))
    validate(theirs, str(SCHEMA_PATH))
    assert ours == theirs


def test_a_rejected_config_names_the_key_and_the_file():
    config = {"data": {"segments": {"train": ["a"], "test": ["b"]}}, "align": {"train": {"steps": "many"}}}
    with pytest.raises(ConfigError, match=r"^mine.yaml: align\.train\.steps: 'many' is not of type 'integer'$"):
        validate_config(config, read_schema(SCHEMA_PATH), source="mine.yaml")
    config["align"] = {"learning_rate": 0.1}
    with pytest.raises(ConfigError, match="align: Additional properties are not allowed .'learning_rate'"):
        validate_config(config, read_schema(SCHEMA_PATH))


def test_defaults_are_copied_so_one_configs_edits_never_reach_the_next():
    """The schema is read once per process; a default section handed out by reference would be filled in
    and edited in place, and the next config would start from those edits."""
    first = {"data": {"segments": {"train": ["a"], "test": ["b"]}}}
    validate_config(first, read_schema(SCHEMA_PATH))
    first["align"]["train"]["steps"] += 1
    first["demo"]["grid"].append(99)
    second = {"data": {"segments": {"train": ["a"], "test": ["b"]}}}
    validate_config(second, read_schema(SCHEMA_PATH))
    assert second["align"]["train"]["steps"] == first["align"]["train"]["steps"] - 1
    assert second["demo"]["grid"] == [16, 16, 12]
