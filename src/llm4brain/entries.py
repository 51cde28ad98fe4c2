"""``"module:function"``: how a training script names the function :func:`llm4brain.distributed.launch` runs
without importing it (the processes import it; the script's own process holds no model stack).

One syntax for its three readers: the launch, which loads the function in its processes (:func:`load`); the
check before any process starts (:func:`check`), so a misspelt reference fails in the job's own process, named,
not in each process; and the code hash, which finds references in a script's source at DAG build
(:data:`QUOTED`), where nothing may be imported.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_NAME = r"[A-Za-z_]\w*"
PATTERN = rf"(?P<module>{_NAME}(?:\.{_NAME})*):(?P<function>{_NAME})"
"""A reference: a dotted module name, a colon, a name the module defines at its top level."""
QUOTED = re.compile(rb"""["']%s["']""" % PATTERN.encode())
"""A reference written as a string literal, in a source file's bytes."""


def split(reference: str) -> tuple[str, str]:
    """``("module", "function")`` for ``"module:function"``.

    Args:
        reference: an entry reference.

    Returns:
        The module's dotted name and the function's name.

    Raises:
        ValueError: ``reference`` is not of the form ``"module:function"``.
    """
    match = re.fullmatch(PATTERN, reference)
    if match is None:
        raise ValueError(f"{reference!r} is not a 'module:function' entry reference")
    return match["module"], match["function"]


def check(reference: str) -> None:
    """Fail, naming ``reference``, when its module cannot be found or its source defines no such name at its
    top level. Reads the source, imports only the enclosing packages (as finding a module does).

    Args:
        reference: an entry reference.

    Raises:
        ValueError: not of the form ``"module:function"``.
        ModuleNotFoundError: no such module on this interpreter's path.
        AttributeError: the module's source does not define the function.
    """
    module, function = split(reference)
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:  # an enclosing package is missing
        spec = None
    if spec is None:
        raise ModuleNotFoundError(f"entry {reference!r}: no module named {module!r}", name=module)
    if spec.origin is None or not spec.origin.endswith(".py"):
        return  # compiled or namespace: nothing to read
    tree = ast.parse(Path(spec.origin).read_bytes(), filename=spec.origin)
    names = set(_top_level_names(tree.body))
    if function not in names and "*" not in names:
        raise AttributeError(f"entry {reference!r}: {spec.origin} defines no {function!r}")


def load(reference: str) -> Callable[..., Any]:
    """The function ``reference`` names, its module imported.

    Args:
        reference: an entry reference.

    Returns:
        The module's attribute of that name.
    """
    module, function = split(reference)
    return getattr(importlib.import_module(module), function)


def _top_level_names(body: list[ast.stmt]) -> Iterator[str]:
    """Names a module's statements bind when it runs (in ``if``/``try``/``with`` blocks too, not in functions)."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name
            continue  # what it binds inside is not the module's
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                yield alias.asname or alias.name.partition(".")[0]
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For, ast.With)):
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.With):
                targets = [item.optional_vars for item in node.items if item.optional_vars is not None]
            else:
                targets = [node.target]
            yield from (name.id for target in targets for name in ast.walk(target) if isinstance(name, ast.Name))
        for field in ("body", "orelse", "finalbody", "handlers"):
            children = getattr(node, field, None)
            if isinstance(children, list):
                yield from _top_level_names(children)
