"""Library entry points with many parameters take them by keyword, and the workflow scripts call them with
names those signatures have: swapping two paths cannot pass silently, and a renamed parameter fails here
rather than in the middle of a workflow run."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from llm4brain.align.train import train_brain_aligner
from llm4brain.distributed import entry_reference
from llm4brain.evaluate.decode import decode_captions, nearest_train_pool
from llm4brain.evaluate.new_run import decode_run
from llm4brain.instruct.train import instruct_llm
from llm4brain.scmbm.train import pretrain_scmbm
from llm4brain.video_llm.train import train_video_llm

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"
ENTRY_POINTS = {
    "train_video_llm.py": train_video_llm,
    "pretrain_scmbm.py": pretrain_scmbm,
    "pretrain_adaptor.py": train_brain_aligner,
    "instruct_llm.py": instruct_llm,
    "decode_captions.py": decode_captions,
    "nearest_train_pool.py": nearest_train_pool,
}


@pytest.mark.parametrize("function", ENTRY_POINTS.values(), ids=lambda f: f.__name__)
def test_entry_point_parameters_are_keyword_only(function):
    kinds = {p.name: p.kind for p in inspect.signature(function).parameters.values()}
    assert set(kinds.values()) == {inspect.Parameter.KEYWORD_ONLY}, kinds
    with pytest.raises(TypeError, match="positional"):
        function(*range(len(kinds)))


@pytest.mark.parametrize("script", ENTRY_POINTS, ids=str)
def test_workflow_script_calls_its_entry_point_by_valid_names(script):
    """Directly, or through llm4brain.distributed.launch (a training rule) by its ``"module:function"``
    reference, whose own keywords are left out."""
    function = ENTRY_POINTS[script]
    calls = [
        node
        for node in ast.walk(ast.parse((SCRIPTS / script).read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == function.__name__
    ]
    launched = [
        node
        for node in ast.walk(ast.parse((SCRIPTS / script).read_text()))
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "launch"
        and [getattr(arg, "value", None) for arg in node.args] == [entry_reference(function)]
    ]
    assert len(calls) + len(launched) == 1 and not any(call.args for call in calls)
    own = {"devices", "device", "log_file"}
    keywords = [k.arg for call in calls + launched for k in call.keywords if not (call in launched and k.arg in own)]
    inspect.signature(function).bind(**dict.fromkeys(keywords))  # TypeError if not


def test_decode_run_options_are_keyword_only():
    parameters = inspect.signature(decode_run).parameters
    assert [p.name for p in parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY] == [
        "replicate",
        "max_new_tokens",
        "num_beams",
        "batch_size",
    ]


def test_the_full_students_sources_are_refused_without_the_pool_and_features(tmp_path):
    """Rule decode_captions and decode_ablation share one entry point: without ``ablation`` it writes every
    source, which needs the nearest-train pool and the features; missing, it says so before reading anything."""
    from llm4brain.sections import EvaluateConfig

    paths = dict.fromkeys(("fmri_path", "latent_path", "captions_path", "teacher_dir", "student_dir"), "missing")
    with pytest.raises(ValueError, match="need the nearest-train pool and the features"):
        decode_captions(
            subject="sub-01",
            **paths,
            out_path=tmp_path / "eval.h5",
            heldout=[],
            evaluate=EvaluateConfig(),
            seed=0,
            pool_path=str(tmp_path / "pool.h5"),
        )
    assert not list(tmp_path.iterdir())
