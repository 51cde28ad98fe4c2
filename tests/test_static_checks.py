"""mypy over the package and the benchmarks that no test runs whole, as a test: `make test` runs it on a
pytest worker beside the workflow tests (70 s from a cold cache) instead of before them; `make style` runs it too."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_mypy_finds_no_type_error():
    run = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
