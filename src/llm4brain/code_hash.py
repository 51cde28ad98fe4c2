"""Which library files a workflow script runs, read from its imports, and their content hash.

Each rule passes the hash of the code its script reaches as a param, so editing a module reruns exactly the
rules whose scripts import it (directly, through other modules, or lazily inside a function, or name it as
``"module:function"`` for :func:`llm4brain.distributed.launch` to import in its processes, read as
:data:`llm4brain.entries.QUOTED` finds them) and what depends
on them. The import graph is read with ``ast``, never by importing: the DAG build must not import torch.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from llm4brain.entries import QUOTED


def module_files(package: Path, module: str) -> list[Path]:
    """The files Python runs to import ``module`` (dotted, from the package's own name): every enclosing
    package's ``__init__.py`` and the module itself. Empty when it is not part of the package.

    Args:
        package: the package folder (``src/llm4brain``); its name is the modules' top-level name.
        module: a dotted module name (``llm4brain.align.model``), or a name a module defines
            (``llm4brain.artifacts.open_artifact``: the files of ``llm4brain.artifacts``).

    Returns:
        The files, outermost package first.
    """
    parts = module.split(".")
    if parts[0] != package.name:
        return []
    files = [package / "__init__.py"]
    for depth in range(2, len(parts) + 1):
        base = package.joinpath(*parts[1:depth])
        if (base / "__init__.py").is_file():
            files.append(base / "__init__.py")
        elif base.with_suffix(".py").is_file():
            files.append(base.with_suffix(".py"))
            break
        else:  # a name the module defines, not a module
            break
    return files


def module_name(package: Path, file: Path) -> str:
    """``llm4brain.align.model`` for ``<package>/align/model.py``; a package for its ``__init__.py``.

    Args:
        package: the package folder (``src/llm4brain``).
        file: a ``.py`` file inside ``package``.

    Returns:
        The file's dotted module name.
    """
    parts = file.relative_to(package).with_suffix("").parts
    return ".".join((package.name, *(parts[:-1] if parts[-1] == "__init__" else parts)))


def import_statements(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement of a module, nested ones included (in functions, classes, ``if``, ``try``,
    ``with``): statements only, since an import is never an expression (a walk of every node costs 5x).

    Args:
        body: a parsed module's statements (``ast.parse(source).body``).

    Yields:
        Each ``import`` and ``from ... import`` statement, in source order, a nested block's where it stands.
    """
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            children = getattr(node, field, None)
            if isinstance(children, list):
                yield from import_statements(children)


# direct imports already read, by file and content digest: a DAG build (and every job, which parses the
# Snakefile again) parses only files edited since (see :func:`script_code_hashes`)
_known: dict[str, list[str]] = {}
PARSE_VERSION = 2  # in every key: a file read by an older :func:`_parse_imports` (1: no entry references) is read again


def direct_imports(package: Path, file: Path) -> tuple[Path, ...]:
    """Package files that ``file`` imports itself, wherever the import statement is (parsed once per content:
    an edited file is parsed again).

    Args:
        package: the package folder (``src/llm4brain``).
        file: a Python file: a workflow script or one of the package's modules.

    Returns:
        The package files that ``file``'s import statements name (with their enclosing ``__init__.py``
            files), each once, in the order first named.
    """
    source = file.read_bytes()
    key = f"{file}:{hashlib.sha256(source).hexdigest()}:{PARSE_VERSION}"
    if key not in _known:
        _known[key] = [str(path) for path in _parse_imports(package, file, source)]
    return tuple(Path(path) for path in _known[key])


def _parse_imports(package: Path, file: Path, source: bytes) -> list[Path]:
    if package.name.encode() not in source and b"from ." not in source:
        return []  # neither an absolute nor a relative import of the package: no need to parse
    own = module_name(package, file) if file.is_relative_to(package) else ""
    is_package = file.name == "__init__.py"
    found: list[Path] = []
    for node in import_statements(ast.parse(source, filename=str(file)).body):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found += module_files(package, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing module's package
                anchor = own.split(".")[: len(own.split(".")) - node.level + is_package]
                base = ".".join([*anchor, *([base] if base else [])])
            found += module_files(package, base)
            for alias in node.names:  # `from pkg import submodule`
                found += module_files(package, f"{base}.{alias.name}")
    for reference in QUOTED.finditer(source):  # an entry launch() imports (none outside the package)
        found += module_files(package, reference["module"].decode())
    return list(dict.fromkeys(found))


def imported_files(script: Path, package: Path) -> list[Path]:
    """Every file of ``package`` that running ``script`` can import, transitively, sorted.

    Args:
        script: a workflow script (``workflow/scripts/{rule}.py``).
        package: the library's package folder (``src/llm4brain``).

    Returns:
        The files' resolved paths, sorted; the script itself is not among them.
    """
    package, seen = package.resolve(), set()
    todo = [script.resolve()]
    while todo:
        for file in direct_imports(package, todo.pop()):
            if file not in seen:
                seen.add(file)
                todo.append(file)
    return sorted(seen)


def code_hash(script: Path, package: Path) -> str:
    """Content hash of the package files ``script`` reaches (paths and bytes): the rule's ``code`` param.

    Args:
        script: a workflow script (``workflow/scripts/{rule}.py``).
        package: the library's package folder (``src/llm4brain``).

    Returns:
        The first 16 hex digits of the SHA-256 of each reached file's path (relative to ``package``) and
            bytes, in :func:`imported_files` order.
    """
    package = package.resolve()
    digest = hashlib.sha256()
    for file in imported_files(script, package):
        digest.update(str(file.relative_to(package)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def script_code_hashes(scripts: Path, package: Path, known: Path | None = None) -> dict[str, str]:
    """``{script name: code hash}`` for every ``*.py`` in ``scripts`` (the workflow's rule scripts).

    Args:
        scripts: the folder of rule scripts.
        package: the library's package folder.
        known: a JSON file of the direct imports read before, by file and content digest, read and then
            rewritten (atomically: jobs building the DAG side by side may write it at once). Hashes do not
            depend on it; it only spares parsing unchanged files again.

    Returns:
        Script name (file stem, as the rules' ``CODE`` table keys it) → :func:`code_hash` of that script.
    """
    if known is not None and known.is_file():
        try:
            _known.update(json.loads(known.read_text()))
        except (OSError, ValueError):
            pass  # unreadable: parsed again and rewritten
    before = len(_known)
    hashes = {script.stem: code_hash(script, package) for script in sorted(scripts.glob("*.py"))}
    if known is not None and len(_known) != before:
        known.parent.mkdir(parents=True, exist_ok=True)
        tmp = known.with_name(f".{known.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(_known))
        os.replace(tmp, known)
    return hashes
