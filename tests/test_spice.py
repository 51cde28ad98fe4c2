"""SPICE: reported unavailable, on purpose, where Stanford CoreNLP is missing; where it is present, its
per-clip F-scores (from the SPICE jar, stubbed here: it needs CoreNLP, which it downloads) reach the corpus
score, the per-clip table and the bootstrap like every other metric's."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from llm4brain.evaluate.score import SPICE_JAR, CocoScorer, spice_status

REFS = {
    "a:0": ["two small red circles moving left"],
    "a:1": ["one large blue square moving up"],
    "b:0": ["three green triangles moving down"],
}
HYPS = {"a:0": "two red circles moving left", "a:1": "a blue square", "b:0": "green circles"}


@pytest.fixture
def spice_package(tmp_path, monkeypatch):
    """pycocoevalcap's spice package relocated to ``tmp_path`` (its lib/ starts empty), CoreNLP's download
    disabled and the jar runner stubbed: it writes what the SPICE jar writes, an F-score per clip that is the
    share of the candidate's tokens found in its references."""
    import pycocoevalcap.spice
    import pycocoevalcap.spice.spice as module

    folder = tmp_path / "spice"
    (folder / "lib").mkdir(parents=True)
    monkeypatch.setattr(pycocoevalcap.spice, "__file__", str(folder / "__init__.py"))
    monkeypatch.setattr(module, "__file__", str(folder / "spice.py"))
    monkeypatch.setattr(module, "get_stanford_models", lambda: None)
    calls = []

    def run_jar(command, cwd):
        assert command[:4] == ["java", "-jar", "-Xmx8G", module.SPICE_JAR] and cwd == str(folder)
        items = json.loads(open(command[4]).read())
        out = command[command.index("-out") + 1]
        scores = []
        for item in items:
            words = item["test"].split()
            f = sum(w in " ".join(item["refs"]).split() for w in words) / len(words)
            scores.append(
                {"image_id": item["image_id"], "scores": {"All": {"f": f, "pr": f, "re": f}, "Object": {"f": None}}}
            )
        open(out, "w").write(json.dumps(scores))
        calls.append(len(items))

    monkeypatch.setattr(subprocess, "check_call", run_jar)
    return folder / "lib", calls


def test_spice_is_unavailable_without_corenlp(spice_package):
    lib, _ = spice_package
    status = spice_status()
    assert status.startswith("unavailable: ") and SPICE_JAR in status and str(lib) in status


def test_spice_scores_reach_corpus_and_per_clip_values(spice_package):
    from llm4brain.evaluate.stats import bootstrap_ci

    lib, calls = spice_package
    (lib / SPICE_JAR).write_bytes(b"")
    assert spice_status() == ""
    scorer = CocoScorer(spice=True)
    gts, res = scorer.tokenize(REFS, HYPS)
    scores, per_clip = scorer.compute(gts, res)
    expected = [1.0, 2 / 3, 0.5]  # tokens of each candidate found in its reference
    np.testing.assert_allclose(per_clip["SPICE"], expected)
    assert scores["SPICE"] == pytest.approx(np.mean(expected))
    low, high = bootstrap_ci(scorer.scorers, gts, res, per_clip, n_boot=20, seed=0)["SPICE"]
    assert low <= scores["SPICE"] <= high
    assert calls == [3]  # the bootstrap resamples per-clip F-scores: one JVM run, not one per resample
