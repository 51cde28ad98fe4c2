"""config/schema.yaml applied to a config: validated, with the schema's defaults filled in.

The same check as ``snakemake.utils.validate`` with ``set_default`` (jsonschema's documented
``extend_with_default``), on a schema read once with libyaml: Snakemake's helper reads the 40-kB schema again
with a pure-Python YAML loader, 0.1 s of every DAG build and of every job, which parses the Snakefile again.
Torch-free: the Snakemake files import it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, MutableMapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError


class ConfigError(ValueError):
    """A config that the schema rejects; the message names the key."""


@cache
def read_schema(path: str | Path) -> dict[str, Any]:
    """The schema at ``path`` (YAML, read with libyaml when PyYAML has it), read once per process."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(Path(path).read_text(), Loader=loader)  # noqa: S506 (a safe loader)


def _set_defaults(validator: Any, properties: dict[str, Any], instance: Any, schema: dict[str, Any]) -> Iterator:
    """``properties``, after giving ``instance`` each property's default that it lacks (a copy: the schema is
    shared, and a default section is then filled in itself)."""
    if isinstance(instance, MutableMapping):
        for name, subschema in properties.items():
            if "default" in subschema and name not in instance:
                instance[name] = copy.deepcopy(subschema["default"])
    yield from Draft202012Validator.VALIDATORS["properties"](validator, properties, instance, schema)


DefaultingValidator = validators.extend(Draft202012Validator, {"properties": _set_defaults})


def validate_config(config: MutableMapping[str, Any], schema: dict[str, Any], *, source: str = "config") -> None:
    """Check ``config`` against ``schema`` and fill in the defaults of the keys it lacks, in place.

    Args:
        config: the config, as Snakemake read it (``--config`` values already typed, see
            :mod:`llm4brain.config_overrides`).
        schema: the JSON schema (:func:`read_schema`).
        source: what the config came from, for the error message.

    Raises:
        ConfigError: the first violation, naming its key (``align.train.steps``) and what is wrong.
    """
    try:
        DefaultingValidator(schema).validate(config)
    except ValidationError as error:
        key = ".".join(str(part) for part in error.absolute_path) or "(top level)"
        raise ConfigError(f"{source}: {key}: {error.message}") from None
