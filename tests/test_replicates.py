"""Replicates: the summary over seeds against a direct computation, the paired test pooled over replicates on
synthetic scores with and without an effect, and the DAG that ``replicates`` plans."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from llm4brain.evaluate.stats import paired_permutation, replicate_sign_flip
from llm4brain.evaluate.summary import pooled_tests, summarize_replicates

SEEDS = [0, 1, 4]
SUBJECTS = {"sub-01": False, "sub-02": True}
SOURCES = ("fmri", "shuffled", "fmri-no_domain_adaptation")


def write_metrics(tmp_path: Path, rng: np.random.Generator) -> dict[int, Path]:
    """A ``metrics.tsv`` per replicate as score_captions writes it: scores, CIs, ``n``, an unavailable metric."""
    paths = {}
    for seed in SEEDS:
        rows = [
            {
                "subject": subject,
                "heldout": heldout,
                "source": source,
                "n": 20,
                "CIDEr": rng.uniform(0, 4),
                "METEOR": rng.uniform(0, 0.5),
                "BERTScore-F1": "unavailable",
                "CIDEr_ci_low": 0.0,
                "CIDEr_ci_high": 5.0,
            }
            for subject, heldout in SUBJECTS.items()
            for source in SOURCES
        ]
        paths[seed] = tmp_path / f"r{seed}" / "metrics.tsv"
        paths[seed].parent.mkdir()
        pd.DataFrame(rows).to_csv(paths[seed], sep="\t", index=False, float_format="%.4f")
    return paths


def per_clip_table(rng: np.random.Generator, effect: float, clips: int = 30) -> pd.DataFrame:
    """Per-clip CIDEr of every replicate: fMRI = shuffled + ``effect`` + noise (each replicate its own level)."""
    tables = []
    for seed in SEEDS:
        shuffled = rng.gamma(2.0, 0.5, clips) + rng.normal()  # a replicate's own baseline
        fmri = shuffled + effect + rng.normal(0, 1.0, clips)
        for source, scores in (("fmri", fmri), ("shuffled", shuffled)):
            tables.append(
                pd.DataFrame(
                    {
                        "subject": "sub-01",
                        "heldout": False,
                        "source": source,
                        "segment": "test01",
                        "tr": np.arange(clips),
                        "CIDEr": scores,
                        "replicate": seed,
                    }
                )
            )
    return pd.concat(tables, ignore_index=True)


def test_summary_equals_a_direct_computation(tmp_path):
    rng = np.random.default_rng(0)
    paths = write_metrics(tmp_path, rng)
    per_clip = per_clip_table(rng, effect=0.0)
    clip_paths = {}
    for seed in SEEDS:
        clip_paths[seed] = tmp_path / f"r{seed}" / "per_clip.tsv"
        per_clip[per_clip["replicate"] == seed].drop(columns="replicate").to_csv(
            clip_paths[seed], sep="\t", index=False
        )
    summarize_replicates(
        metrics_paths=[paths[s] for s in SEEDS],
        per_clip_paths=[clip_paths[s] for s in SEEDS],
        replicates=SEEDS,
        n_permutations=99,
        seed=0,
        summary_path=tmp_path / "summary.tsv",
        tests_path=tmp_path / "pooled.tsv",
    )
    summary = pd.read_csv(tmp_path / "summary.tsv", sep="\t")
    assert list(summary.columns) == [
        "subject",
        "heldout",
        "source",
        "metric",
        "n_replicates",
        "mean",
        "sd",
        "min",
        "max",
        "r0",
        "r1",
        "r4",
    ]
    assert len(summary) == len(SUBJECTS) * len(SOURCES) * 2  # CIDEr and METEOR; not the CIs, n or unavailable
    tables = {seed: pd.read_csv(path, sep="\t").set_index(["subject", "source"]) for seed, path in paths.items()}
    for row in summary.itertuples():
        values = np.array([tables[seed].loc[(row.subject, row.source), row.metric] for seed in SEEDS])
        assert [getattr(row, f"r{seed}") for seed in SEEDS] == pytest.approx(values, abs=1e-4)
        assert row.mean == pytest.approx(values.mean(), abs=1e-4)
        assert row.sd == pytest.approx(values.std(ddof=1), abs=1e-4)
        assert (row.min, row.max, row.n_replicates) == (pytest.approx(values.min()), pytest.approx(values.max()), 3)
        assert row.heldout == SUBJECTS[row.subject]
    assert summary[["subject", "source"]].drop_duplicates().values.tolist() == [
        [subject, source] for subject in SUBJECTS for source in SOURCES
    ]  # in metrics.tsv's order
    pooled = pd.read_csv(tmp_path / "pooled.tsv", sep="\t")
    assert list(pooled.columns) == [
        "subject",
        "heldout",
        "comparison",
        "metric",
        "n_replicates",
        "n",
        "mean_difference",
        "r0",
        "r1",
        "r4",
        "p_replicates",
        "p_clips",
    ]
    assert list(pooled["comparison"]) == ["fmri > shuffled"]
    assert pooled["n"].item() == 3 * 30 and pooled["n_replicates"].item() == 3
    wide = per_clip.pivot_table(index=["replicate", "tr"], columns="source", values="CIDEr")
    direct = (wide["fmri"] - wide["shuffled"]).groupby(level="replicate").mean()
    assert pooled[["r0", "r1", "r4"]].to_numpy()[0] == pytest.approx(direct.loc[SEEDS].to_numpy(), abs=1e-3)


def test_pooled_test_weighs_each_replicate_the_same():
    """The statistic is the mean of the replicates' mean differences, whatever their numbers of clips."""
    rng = np.random.default_rng(1)
    table = per_clip_table(rng, effect=0.5)
    table = table[(table["replicate"] != 0) | (table["tr"] < 5)]  # replicate 0 keeps 5 clips
    [row] = pooled_tests(table, SEEDS, n_perm=199, seed=0).to_dict("records")
    wide = table.pivot_table(index=["replicate", "tr"], columns="source", values="CIDEr")
    per_replicate = (wide["fmri"] - wide["shuffled"]).groupby(level="replicate").mean()
    assert [row[f"r{seed}"] for seed in SEEDS] == pytest.approx(per_replicate.loc[SEEDS].to_numpy())
    assert row["mean_difference"] == pytest.approx(per_replicate.mean())
    assert row["n"] == 5 + 30 + 30


def test_pooled_test_without_an_effect_gives_uniform_p_values():
    rng = np.random.default_rng(2)
    p = np.array([pooled_tests(per_clip_table(rng, 0.0), SEEDS, 199, seed=k)["p_clips"].item() for k in range(200)])
    assert 0.01 <= np.mean(p < 0.05) <= 0.1 and 0.4 <= p.mean() <= 0.6
    assert np.histogram(p, bins=4, range=(0, 1))[0].min() >= 30  # no quarter of [0, 1] left empty


def test_pooled_test_finds_an_effect_that_one_replicate_may_miss():
    rng = np.random.default_rng(3)
    table = per_clip_table(rng, effect=0.3)
    assert pooled_tests(table, SEEDS, 999, seed=0)["p_clips"].item() < 0.05
    single = [pooled_tests(table[table["replicate"] == seed], SEEDS, 999, seed=0)["p_clips"].item() for seed in SEEDS]
    assert max(single) > pooled_tests(table, SEEDS, 999, seed=0)["p_clips"].item()


def test_clip_level_pooling_weighs_each_replicate_the_same():
    """Strata change the test when replicates differ in size: a small replicate with a large gain weighs as
    much as the large ones with a small loss (replicate-weighted mean > 0), where pooling the clips as one
    sample (the plain mean) sees a loss; pooled_tests' p_clips is the weighted one."""
    a = np.concatenate([np.full(10, 1.0), np.full(90, -0.08)])
    strata = np.repeat([0, 1], [10, 90])
    noise = np.random.default_rng(4).normal(0, 0.01, 100)
    weighted = paired_permutation(a + noise, np.zeros(100), 999, 7, strata=strata)
    plain = paired_permutation(a + noise, np.zeros(100), 999, 7)
    assert weighted < 0.01 and plain > 0.2
    table = per_clip_table(np.random.default_rng(6), effect=0.0, clips=45)
    table = table[(table["replicate"] != SEEDS[0]) | (table["tr"] < 5)]  # a small first replicate
    fmri = table["source"] == "fmri"
    table.loc[fmri, "CIDEr"] = table.loc[fmri, "CIDEr"] * 0 + np.where(
        table.loc[fmri, "replicate"] == SEEDS[0], 3.0, -0.3
    )
    table.loc[~fmri, "CIDEr"] = 0.0
    [row] = pooled_tests(table, SEEDS, 999, seed=0).to_dict("records")
    assert row["mean_difference"] == pytest.approx((3.0 - 0.3 * (len(SEEDS) - 1)) / len(SEEDS))
    assert row["p_clips"] < 0.1  # 1/32 at best: the gain rests on 5 clips; the plain mean over clips is negative


def test_replicate_level_test_is_an_exact_sign_flip_over_replicates():
    """Five positive replicates give 1/32, whatever their size; one negative of equal size raises it to the
    share of the 32 sign patterns whose mean reaches the observed one."""
    assert replicate_sign_flip(np.array([0.5, 2.0, 0.1, 1.0, 3.0])) == 1 / 32
    assert replicate_sign_flip(np.array([1.0, 1.0, 1.0, 1.0, -1.0])) == 6 / 32  # patterns with at most one minus sign
    assert replicate_sign_flip(np.array([1.0])) == 0.5
    with pytest.raises(ValueError, match="replicates"):
        replicate_sign_flip(np.zeros(0))
    rng = np.random.default_rng(5)
    table = per_clip_table(rng, effect=0.3)
    [row] = pooled_tests(table, SEEDS, 199, seed=0).to_dict("records")
    differences = [row[f"r{seed}"] for seed in SEEDS]
    assert row["p_replicates"] == replicate_sign_flip(np.array(differences)) >= 1 / 2 ** len(SEEDS)


def test_a_subject_held_out_in_some_replicates_is_tested_apart_from_its_labelled_ones():
    """Under align.heldout_rotation a subject is held out in some replicates and labelled in others: those
    are two results, tested apart (pooling them would let the labelled replicates carry the held-out claim)."""
    rng = np.random.default_rng(9)
    table = per_clip_table(rng, effect=1.0)
    held = table["replicate"] == SEEDS[0]
    table.loc[held, "heldout"] = True
    table.loc[held & (table["source"] == "fmri"), "CIDEr"] -= 5.0  # held out: far below shuffled
    rows = pooled_tests(table, SEEDS, 199, seed=0).set_index("heldout")
    assert rows.loc[True, "n_replicates"] == 1 and rows.loc[False, "n_replicates"] == len(SEEDS) - 1
    assert rows.loc[True, "mean_difference"] < 0 < rows.loc[False, "mean_difference"]
    assert np.isnan(rows.loc[False, f"r{SEEDS[0]}"]) and np.isnan(rows.loc[True, f"r{SEEDS[1]}"])


# ---- the DAG ------------------------------------------------------------------------------------------


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Jobs per rule that a dry run of the whole workflow would execute (its job-stats table)."""
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "--dry-run", "--quiet", "rules", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = (result.stdout + result.stderr).split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def test_replicates_plan_the_seed_dependent_jobs_once_per_seed(tmp_path):
    """``--config replicates=[0,1]`` on the micro demo: every job twice (the demo simulates its data from the
    seed) except those shared by the replicates; on real data (the Wen 2018 layout) preprocessing and features
    are shared and only training, decoding and scoring run per seed."""
    from test_workflow import wen_config
    from workflow_copy import make_copy

    demo = make_copy(tmp_path / "demo")
    one, two = planned_jobs(demo), planned_jobs(demo, "--config", "replicates=[0,1]")
    shared = {"vision_input", "summarize_replicates", "plot_results", "all"}
    assert one.keys() == two.keys() and {"simulate_demo", "pretrain_adaptor", "score_captions"} <= one.keys()
    assert {rule: two[rule] for rule in one} == {rule: one[rule] * (1 if rule in shared else 2) for rule in one}

    fake = tmp_path / "fake"  # the stimuli and captions a dry run names (it reads none of them)
    micro = yaml.safe_load((Path(__file__).parents[1] / ".test" / "micro.yaml").read_text())
    stimuli = fake / f"resources/demo/r{micro['seed']}/stimuli"
    stimuli.mkdir(parents=True)
    for segment in [*micro["data"]["segments"]["train"], *micro["data"]["segments"]["test"]]:
        (stimuli / f"{segment}.mp4").touch()
    (stimuli.parent / "captions.tsv").touch()
    real = make_copy(tmp_path / "real")
    config = wen_config("wen2018.yaml", real, fake)
    config["video"]["model"]["weights"] = None
    (real / "wen.yaml").write_text(yaml.safe_dump(config))
    one = planned_jobs(real, "--configfile", "wen.yaml")
    two = planned_jobs(real, "--configfile", "wen.yaml", "--config", "replicates=[0,1]")
    data = {"preprocess_fmri", "extract_frames", "cache_features", "reference_captions", "plot_fmri_qc"}
    assert data <= one.keys() and not {"simulate_demo"} & one.keys()
    replicated = {"train_video_llm", "pretrain_scmbm", "pretrain_adaptor", "instruct_llm", "decode_captions"}
    assert replicated | {"score_captions", "plot_gallery"} <= one.keys()
    assert {rule: two[rule] for rule in one} == {rule: one[rule] * (1 if rule in data | shared else 2) for rule in one}


def test_decoding_a_new_run_names_the_replicate_when_there_are_several(tmp_path):
    """``llm4brain decode`` takes the only replicate's student, or the one ``--replicate`` names."""
    from llm4brain.artifacts import ArtifactError
    from llm4brain.evaluate.new_run import replicate_dir

    (tmp_path / "r0" / "instruct" / "model").mkdir(parents=True)
    assert replicate_dir(tmp_path, None) == tmp_path / "r0"
    (tmp_path / "r7" / "instruct" / "model").mkdir(parents=True)
    with pytest.raises(ArtifactError, match=r"--replicate SEED .*: r0, r7\)"):
        replicate_dir(tmp_path, None)
    assert replicate_dir(tmp_path, 7) == tmp_path / "r7"
    with pytest.raises(ArtifactError, match="replicate 3 has no trained student"):
        replicate_dir(tmp_path, 3)
