"""Scoring equals a direct pycocoevalcap computation; SPICE is reported, never silently dropped."""

from __future__ import annotations

import pytest

from llm4brain.evaluate.score import CocoScorer, spice_status

REFS = {"a:0": ["two small red circles moving left on a black background"],
        "a:1": ["one large blue square moving up on a white background"],
        "b:0": ["three small green triangles moving down on a gray background"]}
HYPS = {"a:0": "two small red circles moving right on a black background",
        "a:1": "one large blue square moving up on a gray background",
        "b:0": "three large green circles moving down on a gray background"}


@pytest.fixture(scope="module")
def scorer() -> CocoScorer:
    return CocoScorer()


def test_scores_match_pycocoevalcap(scorer):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    ours = scorer.score(REFS, HYPS)
    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": r} for r in refs] for i, refs in REFS.items()})
    res = tok.tokenize({i: [{"caption": HYPS[i]}] for i in REFS})
    bleu, _ = Bleu(4).compute_score(gts, res)
    assert ours["BLEU-1"] == pytest.approx(bleu[0]) and ours["BLEU-4"] == pytest.approx(bleu[3])
    assert ours["CIDEr"] == pytest.approx(Cider().compute_score(gts, res)[0])
    assert ours["ROUGE-L"] == pytest.approx(Rouge().compute_score(gts, res)[0])
    assert ours["METEOR"] == pytest.approx(Meteor().compute_score(gts, res)[0])


def test_perfect_captions_beat_wrong_ones(scorer):
    perfect = scorer.score(REFS, {i: r[0] for i, r in REFS.items()})
    wrong = scorer.score(REFS, {"a:0": HYPS["b:0"], "a:1": HYPS["a:0"], "b:0": HYPS["a:1"]})
    assert perfect["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert all(perfect[m] > wrong[m] for m in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr"))


def test_spice_status_explains():
    status = spice_status()
    assert status == "" or status.startswith("unavailable: ")
