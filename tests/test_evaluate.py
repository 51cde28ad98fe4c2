"""Scoring equals a direct pycocoevalcap computation (SPICE: tests/test_spice.py)."""

from __future__ import annotations

import pytest
from conftest import DEFAULTS

from llm4brain.evaluate.score import CocoScorer, ablation_table

REFS = {
    "a:0": ["two small red circles moving left on a black background"],
    "a:1": ["one large blue square moving up on a white background"],
    "b:0": ["three small green triangles moving down on a gray background"],
}
HYPS = {
    "a:0": "two small red circles moving right on a black background",
    "a:1": "one large blue square moving up on a gray background",
    "b:0": "three large green circles moving down on a gray background",
}


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


def test_bootstrap_ci_contains_estimate_and_is_seeded(scorer):
    from llm4brain.evaluate.stats import bootstrap_ci

    gts, res = scorer.tokenize(REFS, HYPS)
    scores, per_clip = scorer.compute(gts, res)
    ci = bootstrap_ci(scorer.scorers, gts, res, per_clip, n_boot=50, seed=1)
    for name in ("BLEU-1", "ROUGE-L", "METEOR", "CIDEr"):
        low, high = ci[name]
        assert low - 1e-9 <= scores[name] <= high + 1e-9
    assert ci["CIDEr"][0] < scores["CIDEr"] < ci["CIDEr"][1]  # not pinned to an edge: no IDF bias
    assert ci == bootstrap_ci(scorer.scorers, gts, res, per_clip, n_boot=50, seed=1)
    assert ci != bootstrap_ci(scorer.scorers, gts, res, per_clip, n_boot=50, seed=2)


def test_paired_permutation():
    from llm4brain.evaluate.stats import paired_permutation

    rng = __import__("numpy").random.default_rng(0)
    base = rng.normal(size=60)
    assert paired_permutation(base + 1.0, base, 999, seed=0) < 0.01
    assert paired_permutation(base, base + rng.normal(size=60) * 0.01, 999, seed=0) > 0.05


def test_caption_identification():
    from llm4brain.evaluate.stats import caption_identification

    refs = [r[0] for r in REFS.values()]
    perfect = caption_identification(refs, [[r] for r in refs])
    assert perfect["top1"] == 1.0 and perfect["n_way"] == 3 and perfect["chance_top1"] == 1 / 3
    rotated = caption_identification(refs[1:] + refs[:1], [[r] for r in refs])
    assert rotated["top1"] == 0.0
    # with two references per clip, a caption matching only the second reference still finds its clip
    second = [
        "a white background with one large blue square moving up",
        "red circles moving left",
        "green triangles moving down",
    ]
    both = [[r, s] for r, s in zip(refs, [second[1], second[0], second[2]], strict=True)]
    assert caption_identification([second[1], second[0], second[2]], both)["top1"] == 1.0


@pytest.mark.parametrize("metric", ["CIDEr-D", "BLEU-4", "ROUGE-L"])
def test_caption_identification_by_each_ngram_metric(metric):
    from llm4brain.evaluate.stats import caption_identification, coco_similarity, reference_pool

    refs = [r[0] for r in REFS.values()]
    perfect = caption_identification(refs, [[r] for r in refs], metric=metric)
    assert perfect["top1"] == 1.0 and perfect["pairwise"] == 1.0 and perfect["chance_pairwise"] == 0.5
    assert caption_identification(refs[1:] + refs[:1], [[r] for r in refs], metric=metric)["top1"] == 0.0
    # the similarity is the package's own per-pair score
    pool, own = reference_pool([[r] for r in refs])
    sim = coco_similarity(metric, [HYPS["a:0"]], pool)
    if metric == "ROUGE-L":
        from pycocoevalcap.rouge.rouge import Rouge

        assert sim[0, own[0]] == pytest.approx(Rouge().calc_score([HYPS["a:0"]], [refs[0]]))
    if metric == "BLEU-4":
        from pycocoevalcap.bleu.bleu import Bleu

        _, per = Bleu(4).compute_score({"x": [refs[0]]}, {"x": [HYPS["a:0"]]})
        assert sim[0, own[0]] == pytest.approx(per[3][0])


def test_pairwise_identification_counts_a_tie_as_half():
    import numpy as np

    from llm4brain.evaluate.stats import identification

    sim = np.array([[1.0, 0.5, 1.0], [0.0, 0.2, 0.9], [0.3, 0.3, 0.3]])  # own clip on the diagonal
    scores = identification(sim, np.arange(3), ks=(1,))
    assert scores["pairwise"] == pytest.approx(((1 + 0.5) / 2 + (1 + 0) / 2 + (0.5 + 0.5) / 2) / 3)
    assert scores["top1"] == pytest.approx((0.5 + 0 + 1 / 3) / 3) and scores["chance_top1"] == pytest.approx(1 / 3)


def test_caption_identification_counts_ties_at_chance():
    """A caption that scores the same against every clip (0 CIDEr-D: it shares no n-gram) is not a hit: ties
    are broken at random in expectation, so three such captions among three clips score chance."""
    from llm4brain.evaluate.stats import caption_identification

    refs = [[r[0]] for r in REFS.values()]
    scores = caption_identification(["zzz qqq"] * 3, refs, ks=(1, 2, 3))
    assert scores["top1"] == pytest.approx(1 / 3) and scores["top2"] == pytest.approx(2 / 3)
    assert scores["top3"] == 1.0 and scores["chance_top1"] == pytest.approx(1 / 3)


def test_topk_hits_under_random_tie_breaking():
    """Two better and two tied others: the own candidate's rank is uniform on 2, 3 or 4."""
    import numpy as np

    from llm4brain.ranking import topk_accuracy, topk_hits

    others = np.array([[3.0, 2.0, 1.0, 1.0, 0.0]])
    assert topk_hits(others, np.array([1.0]), 1)[0] == 0.0
    assert topk_hits(others, np.array([1.0]), 3)[0] == pytest.approx(1 / 3)
    assert topk_hits(others, np.array([1.0]), 4)[0] == pytest.approx(2 / 3)
    assert topk_hits(others, np.array([1.0]), 5)[0] == 1.0
    flat = topk_accuracy(np.zeros((7, 7)), np.arange(7), ks=(1, 5))
    assert flat["top1"] == pytest.approx(1 / 7) and flat["top5"] == pytest.approx(5 / 7)


def test_every_reference_counts(tmp_path):
    """Several references per clip go into the scores: the metrics equal pycocoevalcap's with all of them,
    and a caption that matches only a second annotator's reference scores as well as one matching the first.
    Voxels that test data chose stay marked in the metrics, the summary over replicates and the report."""
    import h5py
    import pandas as pd

    from llm4brain.artifacts import atomic_h5, read_captions, write_keys, write_strings
    from llm4brain.evaluate.report import subject_label
    from llm4brain.evaluate.score import score_captions
    from llm4brain.evaluate.summary import read_replicates, summarize
    from llm4brain.sections import CaptionsConfig, EvaluateConfig
    from llm4brain.text.captions import reference_captions

    second = {
        "a:0": "a black background with two small red circles going left",
        "a:1": "a white background and one large blue square going up",
        "b:0": "a gray background with three small green triangles going down",
    }
    rows = [(i.split(":")[0], int(i.split(":")[1]), c) for i, refs in REFS.items() for c in (refs[0], second[i])]
    pd.DataFrame(rows, columns=["segment", "tr", "caption"]).to_csv(tmp_path / "refs.tsv", sep="\t", index=False)
    reference_captions(
        tsv=tmp_path / "refs.tsv",
        out_path=tmp_path / "captions.h5",
        segments=["a", "b"],
        captions_config=CaptionsConfig(),
    )
    assert read_captions(tmp_path / "captions.h5")[("a", 1)] == REFS["a:1"][0]  # training uses the first
    ids = list(REFS)
    with atomic_h5(tmp_path / "sub-01.h5", "eval") as f:
        write_keys(f, [i.split(":")[0] for i in ids] * 2, [int(i.split(":")[1]) for i in ids] * 2)
        write_strings(f, "source", ["first"] * 3 + ["second"] * 3)
        write_strings(f, "caption", [REFS[i][0] for i in ids] + [second[i] for i in ids])
        write_strings(f, "reference", [REFS[i][0] for i in ids] * 2)
        f.attrs["subject"] = "sub-01"
        f.attrs["voxel_selection"] = "test-reliability"  # what decode_captions copies from the fMRI artifact
    score_captions(
        eval_paths=[str(tmp_path / "sub-01.h5")],
        captions_path=tmp_path / "captions.h5",
        out_path=tmp_path / "m.tsv",
        identification_path=tmp_path / "i.tsv",
        tests_path=tmp_path / "t.tsv",
        ablation_path=tmp_path / "a.tsv",
        heldout=[],
        evaluate=EvaluateConfig.from_dict({**DEFAULTS["evaluate"], "n_bootstrap": 10, "n_permutations": 10}),
        seed=0,
    )
    metrics = pd.read_csv(tmp_path / "m.tsv", sep="\t").set_index("source")
    assert (metrics["voxel_selection"] == "test-reliability").all()  # test-selected voxels stay visible
    summary = summarize(read_replicates({0: tmp_path / "m.tsv"}), [0])
    assert (summary["voxel_selection"] == "test-reliability").all()
    assert subject_label(metrics.reset_index().iloc[0]).endswith("(test-selected voxels)")
    assert (
        metrics.loc["first", "BLEU-4"] == pytest.approx(metrics.loc["second", "BLEU-4"]) == pytest.approx(1.0, abs=1e-6)
    )
    direct = CocoScorer().score({i: [REFS[i][0], second[i]] for i in ids}, {i: second[i] for i in ids})
    assert metrics.loc["second", "CIDEr"] == pytest.approx(direct["CIDEr"], abs=1e-4)
    with h5py.File(tmp_path / "captions.h5") as f:
        assert len(f["caption"]) == 6


def test_ablation_table_puts_each_ablated_student_next_to_the_full_one():
    import pandas as pd

    metrics = pd.DataFrame(
        {
            "subject": ["s1"] * 4 + ["s2"] * 2,
            "heldout": [False] * 4 + [True] * 2,
            "source": [
                "fmri",
                "shuffled",
                "fmri-no_distillation",
                "video-teacher",
                "fmri",
                "fmri-no_domain_adaptation",
            ],
            "n": 10,
            "CIDEr": [1.0, 0.4, 0.8, 2.0, 0.9, 0.5],
            "CIDEr_ci_low": 0.1,
            "CIDEr_ci_high": 2.0,
            "METEOR": 0.2,
        }
    )
    tests = pd.DataFrame(
        {
            "subject": ["s1", "s1", "s2"],
            "comparison": ["fmri > shuffled", "fmri > fmri-no_distillation", "fmri > fmri-no_domain_adaptation"],
            "metric": "CIDEr",
            "mean_difference": [0.6, 0.2, 0.4],
            "p_value": [0.001, 0.04, 0.2],
        }
    )
    # the same comparison by another metric (BERTScore) does not enter the CIDEr gain
    tests = pd.concat([tests, tests.assign(metric="BERTScore-F1", mean_difference=9.0, p_value=0.5)])
    table = ablation_table(metrics, tests)
    assert list(zip(table["subject"], table["model"], strict=True)) == [
        ("s1", "full"),
        ("s1", "no_distillation"),
        ("s2", "full"),
        ("s2", "no_domain_adaptation"),
    ]
    assert table["cider_gain_of_full"].tolist()[1::2] == [0.2, 0.4] and table["p_value"].tolist()[1::2] == [0.04, 0.2]
    assert table["cider_gain_of_full"].isna().tolist()[::2] == [True, True]


@pytest.mark.parametrize("metric", ["CIDEr-D", "BLEU-4", "ROUGE-L"])
def test_identification_scored_in_blocks_equals_every_pair_at_once(metric, monkeypatch):
    """Candidates x clips scored a block of candidates at a time (memory bounded by PAIRS, not by the test
    clips squared) give the scores of every pair at once: each block pairs its candidates with the whole pool,
    so CIDEr-D's document frequencies are the pool's."""
    import numpy as np

    from llm4brain.evaluate import stats

    words = "a red blue green circle square triangle moving left right up down on black white gray".split()
    rng = np.random.default_rng(0)
    sentences = [" ".join(rng.choice(words, 6)) for _ in range(24)]
    pool, _ = stats.reference_pool([[s, t] for s, t in zip(sentences[:12], sentences[12:], strict=True)])
    candidates = [" ".join(rng.choice(words, 5)) for _ in range(7)]
    whole = stats.coco_similarity(metric, candidates, pool)
    monkeypatch.setattr(stats, "PAIRS", 2 * len(pool))  # blocks of two candidates, the last of one
    np.testing.assert_array_equal(stats.coco_similarity(metric, candidates, pool), whole)
    assert np.ptp(whole) > 0


@pytest.mark.parametrize("metric", ["CIDEr-D", "ROUGE-L"])
def test_n_way_identification_scores_each_pair_as_against_every_clip(metric):
    """evaluate.identification_ways: each caption against its own clip and n - 1 distinct others drawn for
    it; every pair scores exactly as in the comparison with every clip, so only the candidates change."""
    import numpy as np

    from llm4brain.evaluate import stats

    words = "a red blue green circle square triangle moving left right up down on black white gray".split()
    rng = np.random.default_rng(3)
    refs = [" ".join(rng.choice(words, 6)) for _ in range(9)]
    pool, own = stats.reference_pool([[r] for r in refs])
    candidates = [" ".join(rng.choice(words, 5)) for _ in range(9)]
    columns = np.array([stats.drawn_clips(own[i], len(pool), 4, (0, i)) for i in range(len(candidates))])
    assert (columns[:, 0] == own).all() and all(len(set(row)) == 4 for row in columns.tolist())
    full = stats.coco_similarity(metric, candidates, pool)
    drawn = stats.coco_similarity(metric, candidates, pool, columns)
    np.testing.assert_array_equal(drawn, np.take_along_axis(full, columns, 1))
    perfect = stats.caption_identification(refs, [[r] for r in refs], metric=metric, ways=2)
    assert perfect["n_way"] == 2 and perfect["chance_top1"] == 0.5 and perfect["top1"] == 1.0
    every = stats.caption_identification(candidates, [[r] for r in refs], metric=metric)
    assert stats.caption_identification(candidates, [[r] for r in refs], metric=metric, ways=9) == every
