"""The configuration reference, generated from config/schema.yaml: every key with its type, default and
description. A MkDocs hook (``on_files``) adds it to the site as ``configuration.md`` at build time, so the
page cannot drift from the schema; tests/test_docs.py checks that every key has a description."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schema.yaml"
PAGE = "configuration.md"


def load_schema(path: Path = SCHEMA) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def is_section(node: dict[str, Any]) -> bool:
    """An object whose keys the schema lists (a section): documented key by key, not as one value."""
    return node.get("type") == "object" and "properties" in node


def is_table(node: dict[str, Any]) -> bool:
    """A list of objects whose keys the schema lists (e.g. ``scmbm.collections``): its item keys are documented
    as ``key[].name``."""
    return node.get("type") == "array" and is_section(node.get("items", {}))


def walk(node: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(dotted key, schema node) of every key, depth first, in the schema's order; sections included."""
    for name, child in node.get("properties", {}).items():
        key = f"{prefix}{name}"
        yield key, child
        if is_section(child):
            yield from walk(child, f"{key}.")
        elif is_table(child):
            yield from walk(child["items"], f"{key}[].")


def leaf_keys(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every key that holds a value (not a section)."""
    return [(key, node) for key, node in walk(schema) if not is_section(node)]


def type_of(node: dict[str, Any]) -> str:
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "oneOf" in node or "anyOf" in node:
        return " or ".join(type_of(alternative) for alternative in node.get("oneOf", node.get("anyOf")))
    if "enum" in node:
        return " | ".join(f"`{value}`" for value in node["enum"])
    kinds = node.get("type", "any")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    text = " or ".join(str(kind) for kind in kinds)
    if "array" in kinds and "items" in node:
        item = node["items"]
        inner = (
            "object"
            if is_section(item)
            else " | ".join(map(str, item["enum"]))
            if "enum" in item
            else item.get("type", "any")
        )
        text = text.replace("array", f"list of {inner}")
    bounds = [
        f"≥ {node['minimum']}" if "minimum" in node else "",
        f"> {node['exclusiveMinimum']}" if "exclusiveMinimum" in node else "",
        f"≤ {node['maximum']}" if "maximum" in node else "",
        f"< {node['exclusiveMaximum']}" if "exclusiveMaximum" in node else "",
    ]
    bounds = [bound for bound in bounds if bound]
    return f"{text} ({', '.join(bounds)})" if bounds else text


def default_of(node: dict[str, Any], required: bool) -> str:
    if "default" not in node:
        return "**required**" if required else "—"
    return f"`{json.dumps(node['default'], ensure_ascii=False)}`"


def cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def render(schema: dict[str, Any]) -> str:
    """The Markdown page: one table per top-level section, a heading per nested section."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated at build time from config/schema.yaml by tools/config_reference.py: edit the schema, "
        "not this page. -->",
        "",
        cell(schema.get("description", "")),
        "",
        "Give a complete config with `--configfile`, or override keys with `--config 'section={key: value}'`. "
        "Validation runs when the DAG is built: it fills every default below and rejects unknown or ill-typed "
        "keys. The `train` sections share one definition.",
        "",
    ]
    top_level: list[str] = []
    for name, node in schema["properties"].items():
        if is_section(node):
            continue
        top_level.append(row(name, node, name in schema.get("required", [])))
    if top_level:
        lines += ["## Top-level keys", "", *table(top_level), ""]
    for name, node in schema["properties"].items():
        if is_section(node):
            lines += section(name, node, level=2)
        elif is_table(node):
            lines += section(f"{name}[]", node["items"], level=2)
    return "\n".join(lines) + "\n"


def row(key: str, node: dict[str, Any], required: bool) -> str:
    cells = (type_of(node), default_of(node, required), node.get("description", ""))
    return f"| `{key}` | " + " | ".join(cell(text) for text in cells) + " |"


def table(rows: list[str]) -> list[str]:
    return ["| key | type | default | description |", "|---|---|---|---|", *rows]


def section(key: str, node: dict[str, Any], level: int) -> list[str]:
    lines = [f"{'#' * level} `{key}`", ""]
    if node.get("description"):
        lines += [cell(node["description"]), ""]
    required = set(node.get("required", []))
    rows = [
        row(f"{key}.{name}", child, name in required)
        for name, child in node["properties"].items()
        if not is_section(child)
    ]
    if rows:
        lines += [*table(rows), ""]
    for name, child in node["properties"].items():
        if is_section(child):
            lines += section(f"{key}.{name}", child, min(level + 1, 4))
        elif is_table(child):
            lines += section(f"{key}.{name}[]", child["items"], min(level + 1, 4))
    return lines


def on_files(files: Any, config: Any) -> Any:
    """MkDocs hook: add the generated page to the site's files."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=render(load_schema())))
    return files


if __name__ == "__main__":
    print(render(load_schema()), end="")
