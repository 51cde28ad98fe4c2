"""The per-rule code hash follows the import graph of each workflow script, read with ``ast``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from llm4brain.code_hash import direct_imports, imported_files, script_code_hashes

REPO = Path(__file__).resolve().parents[1]


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def fake_package(tmp_path: Path) -> Path:
    """``pkg``: a sub-package reached four ways (plain, from-import of a submodule, relative, lazy inside a
    function), a module nobody imports, and an import of something outside the package."""
    write(
        tmp_path / "pkg",
        {
            "__init__.py": "",
            "core.py": "import json\nfrom pkg.util import helper\n",
            "util.py": "def helper():\n    from . import lazy\n",
            "lazy.py": "",
            "stage/__init__.py": "",
            "stage/run.py": "from .model import Model\nimport pkg.core\n",
            "stage/model.py": "class Model: ...\n",
            "stage/unused.py": "",
            "other.py": "",
        },
    )
    write(
        tmp_path / "scripts",
        {
            "run_stage.py": "from pkg.stage.run import main\n",
            "plain.py": "from pkg import other\nimport numpy\n",
        },
    )
    return tmp_path / "pkg"


def test_imported_files_follow_every_kind_of_import(tmp_path):
    package = fake_package(tmp_path)
    reached = imported_files(tmp_path / "scripts" / "run_stage.py", package)
    names = [str(file.relative_to(package.resolve())) for file in reached]
    assert names == [
        "__init__.py",
        "core.py",
        "lazy.py",
        "stage/__init__.py",
        "stage/model.py",
        "stage/run.py",
        "util.py",
    ]
    assert [f.name for f in imported_files(tmp_path / "scripts" / "plain.py", package)] == ["__init__.py", "other.py"]


def test_code_hash_changes_with_exactly_the_reached_files(tmp_path):
    package = fake_package(tmp_path)
    before = script_code_hashes(tmp_path / "scripts", package)
    assert set(before) == {"run_stage", "plain"}
    (package / "stage" / "unused.py").write_text("x = 1\n")  # reached by no script
    assert script_code_hashes(tmp_path / "scripts", package) == before
    (package / "lazy.py").write_text("x = 1\n")  # reached by run_stage only, through a lazy relative import
    after = script_code_hashes(tmp_path / "scripts", package)
    assert after["run_stage"] != before["run_stage"] and after["plain"] == before["plain"]


def test_workflow_scripts_reach_their_stage_modules_without_importing_torch():
    """On the real workflow, as the DAG build computes it: in a fresh interpreter, torch is never imported."""
    package = REPO / "src" / "llm4brain"
    reached = imported_files(REPO / "workflow" / "scripts" / "instruct_llm.py", package)
    assert package.resolve() / "instruct" / "train.py" in reached
    assert package.resolve() / "training.py" in reached  # imported by instruct/train.py, not by the script
    check = (
        "import sys; from pathlib import Path; from llm4brain.code_hash import script_code_hashes; "
        f"hashes = script_code_hashes(Path({str(REPO / 'workflow' / 'scripts')!r}), Path({str(package)!r})); "
        "assert len(hashes) >= 20 and 'torch' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", check], check=True)


def test_imports_read_before_spare_parsing_and_never_go_stale(tmp_path, monkeypatch):
    """The direct imports kept by file and content digest: a second DAG build parses nothing, an edited file
    is parsed again (its new import counts), and an unreadable store is only a slower build."""
    import llm4brain.code_hash as code_hash

    package, scripts, known = fake_package(tmp_path), tmp_path / "scripts", tmp_path / "known.json"
    before = script_code_hashes(scripts, package, known)
    assert known.is_file()
    parsed: list[str] = []
    parse = code_hash._parse_imports
    monkeypatch.setattr(
        code_hash, "_parse_imports", lambda p, file, src: parsed.append(file.name) or parse(p, file, src)
    )
    monkeypatch.setattr(code_hash, "_known", {})  # a new process: only the file remembers
    assert script_code_hashes(scripts, package, known) == before and parsed == []
    (package / "other.py").write_text("from pkg import lazy\n")  # plain.py now reaches lazy.py
    after = script_code_hashes(scripts, package, known)
    assert parsed == ["other.py"] and after["plain"] != before["plain"] and after["run_stage"] == before["run_stage"]
    assert "lazy.py" in [f.name for f in imported_files(scripts / "plain.py", package)]
    known.write_text("{not json")
    monkeypatch.setattr(code_hash, "_known", {})
    assert script_code_hashes(scripts, package, known) == after


def test_the_package_has_no_import_circle():
    """No module of the package imports itself through others, lazy and type-checking imports included (a
    circle works only while every import in it stays lazy, and breaks on the first one moved to the top)."""
    package = REPO / "src" / "llm4brain"
    edges = {
        file: {other for other in direct_imports(package, file) if other != file and other.name != "__init__.py"}
        for file in package.rglob("*.py")
    }
    state: dict[Path, str] = {}

    def visit(file: Path, path: list[Path]) -> None:
        state[file] = "open"
        for other in sorted(edges[file]):
            assert state.get(other) != "open", " -> ".join(str(p.relative_to(package)) for p in [*path, other])
            if other not in state:
                visit(other, [*path, other])
        state[file] = "done"

    for file in sorted(edges):
        if file not in state:
            visit(file, [file])


def test_entry_references_reach_the_modules_the_launch_would_import(tmp_path, monkeypatch):
    """A script that names its entry as ``"module:function"`` (launch() imports it in its processes, the script
    does not) reaches that module and what it imports; the references followed are the ones the launch checks
    and accepts, and a string of another shape (a backend list) is not followed."""
    from llm4brain import entries

    package = fake_package(tmp_path)
    script = tmp_path / "scripts" / "launched.py"
    script.write_text(
        'BACKEND = "cpu:gloo,cuda:nccl"\nlaunch("pkg.stage.model:Model", devices=2)\nlaunch(\'pkg.util:helper\')\n'
    )
    names = [str(file.relative_to(package.resolve())) for file in imported_files(script, package)]
    assert names == ["__init__.py", "lazy.py", "stage/__init__.py", "stage/model.py", "util.py"]
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        for match in entries.QUOTED.finditer(script.read_bytes()):
            entries.check(match.group().decode()[1:-1])
    finally:
        for name in [name for name in sys.modules if name == "pkg" or name.startswith("pkg.")]:
            del sys.modules[name]
