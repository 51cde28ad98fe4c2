"""``--config`` overrides as the schema types them.

Snakemake reads the values of ``--config key=value`` with YAML's base loader, so every scalar in a nested
value arrives as text: ``--config "align={train: {steps: 100}}"`` gives ``{"steps": "100"}``, which the schema
then rejects. :func:`typed` walks the config along ``config/schema.yaml`` and reads such text as YAML
wherever the schema does not allow a string there, keeping the result only when it has a type the schema
allows. Strings the schema allows stay strings (a subject named ``01`` stays ``"01"``), except ``null`` where
null is allowed too.
"""

from __future__ import annotations

from typing import Any

import yaml

PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
    "string": (str,),
}


def _types(schema: dict[str, Any]) -> set[str]:
    """The JSON types a schema allows, its ``oneOf`` / ``anyOf`` branches included."""
    declared = schema.get("type")
    types = {declared} if isinstance(declared, str) else set(declared or ())
    for branch in schema.get("oneOf", []) + schema.get("anyOf", []):
        types |= _types(branch)
    return types


def _allows(types: set[str], value: Any) -> bool:
    if isinstance(value, bool):  # a bool is an int to Python, not to JSON schema
        return "boolean" in types
    return any(isinstance(value, PYTHON_TYPES[name]) for name in types if name in PYTHON_TYPES)


def _branch(schema: dict[str, Any], kind: str) -> dict[str, Any]:
    """The part of ``schema`` (itself, or its first ``oneOf`` / ``anyOf`` branch) that describes ``kind``."""
    for candidate in [schema, *schema.get("oneOf", []), *schema.get("anyOf", [])]:
        if kind in _types(candidate):
            return candidate
    return schema


def typed(value: Any, schema: dict[str, Any]) -> Any:
    """``value`` with every text scalar that the schema types otherwise read as YAML (see the module doc)."""
    types = _types(schema)
    if isinstance(value, str) and types:
        if "string" not in types or ("null" in types and value in ("null", "~")):
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                return value  # left as it is: validation names the key
            if isinstance(parsed, str) and "number" in types:
                try:  # YAML 1.1 reads 3e-4 (no dot) as text
                    parsed = float(parsed)
                except ValueError:
                    pass
            if _allows(types, parsed):
                value = parsed
    if isinstance(value, dict):
        part = _branch(schema, "object")
        properties, extra = part.get("properties", {}), part.get("additionalProperties")
        return {
            key: typed(item, properties.get(key, extra if isinstance(extra, dict) else {}))
            for key, item in value.items()
        }
    if isinstance(value, list):
        items = _branch(schema, "array").get("items", {})
        return [typed(item, items) for item in value]
    return value
