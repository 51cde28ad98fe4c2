"""``"module:function"`` references (llm4brain.entries): what the launch's check accepts and refuses, read from
the module's source without importing it."""

from __future__ import annotations

import sys

import pytest

from llm4brain import entries

SOURCE = """
import os.path
import json as codec
from math import pi as PI, tau

def function(): inner = 1
async def coroutine(): ...
class Model: attribute = 1
first, (second, third) = 1, (2, 3)
annotated: int = 1
if os.path.sep:
    in_if = 1
else:
    in_else = 1
try:
    in_try = 1
except ImportError:
    in_handler = 1
finally:
    in_finally = 1
for looped in range(1):
    in_loop = 1
with open(__file__) as opened:
    in_with = 1
"""
BOUND = ["os", "codec", "PI", "tau", "function", "coroutine", "Model", "first", "second", "third", "annotated"]
BOUND += ["in_if", "in_else", "in_try", "in_handler", "in_finally", "looped", "in_loop", "opened", "in_with"]


@pytest.fixture
def module(tmp_path, monkeypatch):
    (tmp_path / "entry_source.py").write_text(SOURCE)
    (tmp_path / "entry_star.py").write_text("from entry_source import *\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "entry_source"
    sys.modules.pop("entry_source", None)


def test_every_name_the_module_binds_at_its_top_level_is_accepted_and_nothing_is_imported(module):
    for name in BOUND:
        entries.check(f"{module}:{name}")
    entries.check("entry_star:anything")  # a star import: nothing to refuse it with
    assert module not in sys.modules and "entry_star" not in sys.modules


@pytest.mark.parametrize(
    ("reference", "error", "message"),
    [
        ("entry_source:inner", AttributeError, "entry_source.py defines no 'inner'"),  # bound in a function
        ("entry_source:attribute", AttributeError, "defines no 'attribute'"),  # bound in a class
        ("entry_source:path", AttributeError, "defines no 'path'"),  # `import os.path` binds os
        ("entry_sourc:function", ModuleNotFoundError, "no module named 'entry_sourc'"),
        ("no_such_package.module:function", ModuleNotFoundError, "no module named 'no_such_package.module'"),
        ("entry_source.function", ValueError, "is not a 'module:function' entry reference"),
        ("entry_source:function:x", ValueError, "is not a 'module:function' entry reference"),
    ],
)
def test_a_reference_the_module_does_not_define_is_refused_by_name(module, reference, error, message):
    with pytest.raises(error, match=message):
        entries.check(reference)


def test_load_imports_the_module_and_returns_the_function(module):
    assert entries.load(f"{module}:Model").attribute == 1
