"""The configuration reference is generated from config/schema.yaml and documents every key."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

import config_reference  # noqa: E402


def rows(page: str) -> dict[str, list[str]]:
    """``{key: [type, default, description]}`` of every table row of the page."""
    found = {}
    for line in page.splitlines():
        match = re.match(r"^\| `([^`]+)` \| (.*) \|$", line)
        if match:
            found[match.group(1)] = re.split(r"(?<!\\) \| ", match.group(2))
    return found


def test_every_schema_key_has_a_description():
    schema = config_reference.load_schema()
    keys = config_reference.leaf_keys(schema)
    missing = [key for key, node in keys if not str(node.get("description", "")).strip()]
    assert len(keys) > 150 and not missing, f"config/schema.yaml keys without a description: {missing}"


def test_generated_page_lists_every_key_with_type_default_and_description():
    schema = config_reference.load_schema()
    table = rows(config_reference.render(schema))
    keys = config_reference.leaf_keys(schema)
    assert sorted(table) == sorted(key for key, _ in keys)
    for key, node in keys:
        kind, default, description = table[key]
        assert kind and description == config_reference.cell(node["description"]), key
        if "default" in node:
            assert default == f"`{json.dumps(node['default'], ensure_ascii=False)}`", key
    assert table["evaluate.n_bootstrap"][:2] == ["integer (≥ 10)", "`100`"]
    assert table["data.layout"][0] == r"`demo` \| `bids` \| `wen2018`"
    assert table["data.segments.train"][1] == "**required**"


def test_nested_keys_and_lists_of_objects_are_walked(tmp_path):
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "object", "properties": {"b": {"type": "integer", "default": 1}}},
            "c": {"type": "array", "items": {"type": "object", "properties": {"d": {"type": "string"}}}},
        },
    }
    keys = [key for key, _ in config_reference.leaf_keys(schema)]
    assert keys == ["a.b", "c", "c[].d"]
    assert set(rows(config_reference.render(schema))) == {"a.b", "c", "c[].d"}


def test_the_site_generates_the_page_at_build_time():
    config = yaml.load((REPO / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)
    assert "tools/config_reference.py" in config["hooks"] and config["strict"] == "true"
    assert {"Configuration reference": config_reference.PAGE} in config["nav"]
    assert not (REPO / "docs" / config_reference.PAGE).exists()  # never a stale hand-kept copy


def test_site_checker_finds_broken_links_anchors_and_images(tmp_path):
    import check_site

    (tmp_path / "page").mkdir()
    (tmp_path / "page" / "index.html").write_text('<h2 id="here">x</h2><a href="../">home</a>')
    (tmp_path / "ok.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    (tmp_path / "bad.svg").write_text("<svg")
    (tmp_path / "index.html").write_text(
        '<a href="page/">ok</a><a href="page/#here">ok</a><a href="https://example.org">not fetched</a>'
        '<img src="ok.svg"><a href="page/#gone">bad anchor</a><a href="missing/">bad link</a>'
        '<img src="bad.svg"><img src="nowhere.png">'
    )
    problems, external = check_site.check_links(tmp_path)
    assert external == {"https://example.org"}
    assert sorted(problem.split(" ")[2] for problem in problems) == ["bad.svg", "missing/", "nowhere.png", "page/#gone"]


def test_every_function_the_api_reference_shows_documents_its_arguments():
    """docs/api.md renders docstrings Google style (mkdocs.yml): a function with parameters and no ``Args:``
    section would show none of them. Each parameter must also be named in that section."""
    import importlib
    import inspect

    missing = []
    for path in re.findall(r"^:::\s+(\S+)", (REPO / "docs" / "api.md").read_text(), re.M):
        module, _, name = path.rpartition(".")
        parent = importlib.import_module(module)
        obj = getattr(parent, name) if hasattr(parent, name) else importlib.import_module(path)  # or a module
        if not inspect.isfunction(obj):
            continue
        doc = inspect.getdoc(obj) or ""
        args = doc.split("Args:", 1)[1] if "Args:" in doc else ""
        for parameter in inspect.signature(obj).parameters:
            if not re.search(rf"^\s+\*{{0,2}}{parameter}\b.*:", args, re.M):
                missing.append(f"{path}({parameter})")
    assert not missing, missing
