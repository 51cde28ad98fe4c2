"""Shared fixtures: offline Hugging Face, a tiny simulated dataset, and its preprocessed fMRI."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]

# `make test` hands whole files to two workers in collection order (--no-loadscope-reorder): the longest files
# first, so that the short ones fill in at the end and both workers finish together. Measured on 2 cores
# (docs/benchmarks.md): the workflow file ~900 s, the distributed tests ~250, the rehearsal ~170-270, the
# cross-subject workflow ~150, the streams ~90, mypy ~70; every other file under 70 s.
LONGEST_FIRST = [
    "test_workflow.py",
    "test_distributed.py",
    "test_rehearsal.py",
    "test_workflow_cross_subject.py",
    "test_stream.py",
    "test_static_checks.py",
    "test_evaluate.py",
    "test_video.py",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the files of :data:`LONGEST_FIRST` first, in that order; the others keep theirs."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: tests keep their order in a file


def schema_defaults() -> dict:
    """Every section of config/schema.yaml with its defaults, as the workflow fills them at DAG build."""
    from llm4brain.config_schema import read_schema, validate_config

    config = {"data": {"segments": {"train": ["seg01"], "test": ["test01"]}}}
    validate_config(config, read_schema(REPO / "config" / "schema.yaml"))
    return config


DEFAULTS = schema_defaults()
TRAIN_DEFAULTS = DEFAULTS["align"]["train"]

TINY_DEMO = {
    "trs_per_segment": 8,
    "fps": 4,
    "frame_size": 32,
    "grid": [8, 8, 6],
    "scene_trs": [1, 2],
    "train_repeats": [2, 1],
    "test_repeats": 2,
    "rest_trs": [2, 4],
    "subject_variability": 0.3,
    "subject_shift": 1,
    "noise": 0.5,
    "drift": 0.5,
    "regime": "shared-linear",
    "idiosyncrasy": 0.4,
}
TINY_SEGMENTS = {"train": ["seg01", "seg02"], "test": ["test01"]}
TINY_SUBJECTS = ["sub-01", "sub-02"]


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-subject, three-segment demo dataset written once per test session."""
    from llm4brain.demo.simulate import simulate_demo
    from llm4brain.sections import DataSegmentsConfig, DemoConfig

    root = tmp_path_factory.mktemp("demo") / "demo"
    simulate_demo(
        out_dir=root,
        subjects=TINY_SUBJECTS,
        segments=DataSegmentsConfig.from_dict(TINY_SEGMENTS),
        tr=2.0,
        demo=DemoConfig.from_dict(TINY_DEMO),
        seed=7,
    )
    return root


FMRI_PARAMS = copy.deepcopy(DEFAULTS["fmri"])  # the fmri section's defaults (detrend order 2, no trim, ...)
