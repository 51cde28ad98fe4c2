"""Helpers of the workflow tests: a copy of the repository with the micro config (.test/micro.yaml), Snakemake
run in it, what a dry run plans, and temporary config edits."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SEED = yaml.safe_load((REPO / ".test" / "micro.yaml").read_text())["seed"]
RUN, RAW = f"results/r{SEED}", f"resources/demo/r{SEED}"  # the micro config's one replicate (its data too: a demo)
COPY = ("Snakefile", "rules", "workflow", "src", "config/schema.yaml", "profiles", "envs", "requirements.txt", "report")


def make_copy(target: Path) -> Path:
    for name in COPY:
        src = REPO / name
        dst = target / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    shutil.copy(REPO / ".test" / "micro.yaml", target / "config" / "config.yaml")
    return target


def snakemake(workdir: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result.stdout + result.stderr


def planned_rules(workdir: Path, *args: str) -> set[str]:
    """Rules a dry run would execute (from its job-stats table)."""
    out = snakemake(workdir, "--dry-run", "--quiet", "rules", *args)
    if "Nothing to be done" in out:
        return set()
    table = out.split("Job stats:")[1].split("total")[0]
    return {m.group(1) for m in re.finditer(r"^(\w+)\s+\d+\s*$", table, re.M)} - {"job", "all"}


@contextlib.contextmanager
def edited(path: Path, text: str) -> Iterator[None]:
    """Temporarily replace a file's text (each test sees the workflow as the fixture left it)."""
    original = path.read_text()
    path.write_text(text)
    try:
        yield
    finally:
        path.write_text(original)


def config_edit(workdir: Path, section: str, key: str, value: object) -> contextlib.AbstractContextManager:
    """A config with one key changed, written back with sorted keys (key order must not matter)."""
    path = workdir / "config" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config.setdefault(section, {})[key] = value
    return edited(path, yaml.safe_dump(config))
