"""The arithmetic of benchmarks/cross_subject.py: the recovered share of the floor-to-ceiling gap per
replicate, the replicate-level test, the symmetric comparison, and which runs it measures."""

from __future__ import annotations

import sys

import pandas as pd
import pytest
import yaml
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import cross_subject  # noqa: E402
from cross_subject import recovered, symmetric  # noqa: E402


def test_recovered_share_is_a_ratio_of_each_replicates_means_and_p_counts_replicates():
    """Two held-out subjects per replicate; "half" recovers half of each replicate's mean gap, "worse" loses
    ground in one replicate. Five replicates where a method always gains give p = 1/32."""
    rows = []
    for replicate in range(5):
        for subject, (floor, ceiling) in {"sub-01": (0.2, 0.6), "sub-02": (0.1, 0.3)}.items():
            values = {"none": floor, "ceiling": ceiling, "half": floor + (ceiling - floor) / 2}
            values["worse"] = floor - 0.05 if replicate == 0 else floor + 0.01 * replicate
            rows += [
                {"regime": "r", "replicate": replicate, "heldout": subject, "method": method, "top5": value}
                for method, value in values.items()
            ]
    # a regime where only "half" was measured (as SRM is not in disjoint): no row for the others there
    rows += [
        {"regime": "s", "replicate": 0, "heldout": "sub-01", "method": method, "top5": value}
        for method, value in (("none", 0.2), ("ceiling", 0.6), ("half", 0.4))
    ]
    table = recovered(pd.DataFrame(rows), "top5")
    assert table[table["regime"] == "s"]["method"].tolist() == ["half"]
    summary = table[table["regime"] == "r"].set_index("method")
    assert summary.loc["half", "recovered_share"] == pytest.approx(0.5)
    assert summary.loc["half", "p_replicates"] == 1 / 32 and summary.loc["half", "n_replicates"] == 5
    assert (summary.loc["half", ["floor", "adapted", "ceiling"]].tolist()) == pytest.approx([0.15, 0.3, 0.45])
    worse = [-0.05 / 0.3] + [0.01 * r / 0.3 for r in range(1, 5)]  # each replicate's mean gain / mean gap
    assert summary.loc["worse", "recovered_share"] == pytest.approx(sum(worse) / 5)
    assert summary.loc["worse", "replicate_min"] == pytest.approx(worse[0])
    assert summary.loc["worse", "p_replicates"] > 1 / 32
    # the 95 % t interval over the five replicates' shares (t quantile of 4 degrees of freedom)
    mean = sum(worse) / 5
    sd = (sum((w - mean) ** 2 for w in worse) / 4) ** 0.5
    low, high = summary.loc["worse", ["ci_low", "ci_high"]]
    assert (low, high) == pytest.approx((mean - 2.7764451 * sd / 5**0.5, mean + 2.7764451 * sd / 5**0.5))
    assert summary.loc["half", ["ci_low", "ci_high"]].tolist() == pytest.approx([0.5, 0.5])


def test_srm_all_is_measured_against_a_ceiling_read_through_the_same_space():
    """srm-all carries every subject, so its ceiling is the own-label run with every subject carried
    (ceiling-srm-all), which is no method of its own; its held-out / labelled ratio reads both alike."""
    rows = []
    for replicate in range(3):
        values = {"none": 0.2, "ceiling": 0.6, "ceiling-srm-all": 0.8, "srm": 0.7, "srm-all": 0.5}
        labelled = {"srm": 0.5, "srm-all": 0.6}
        rows += [
            {
                "regime": "r",
                "replicate": replicate,
                "heldout": "sub-01",
                "method": method,
                "top5": value,
                "labelled_top5": labelled.get(method),
            }
            for method, value in values.items()
        ]
    table = pd.DataFrame(rows)
    summary = recovered(table, "top5").set_index("method")
    assert sorted(summary.index) == ["srm", "srm-all"]
    assert summary.loc["srm", "recovered_share"] == pytest.approx(0.5 / 0.4)
    assert summary.loc["srm-all", "recovered_share"] == pytest.approx(0.3 / 0.6)
    assert summary.loc["srm-all", "ceiling"] == pytest.approx(0.8)
    ratio = symmetric(table, "top5").set_index("method")
    assert ratio.loc["srm", "ratio"] == pytest.approx(0.7 / 0.5) and ratio.loc["srm-all", "ratio"] == pytest.approx(
        0.5 / 0.6
    )
    assert ratio.loc["srm-all", "n_replicates"] == 3


def test_every_heldout_subject_is_measured_in_every_replicate(monkeypatch, tmp_path):
    """Two replicates x three held-out subjects, each with its floor, methods and ceiling; one ceiling run
    per replicate serves every held-out subject (every subject labelled), except in disjoint, where each
    held-out subject's ceiling is trained on its own data and labels alone."""
    calls = []

    def fake_run(workdir, seed, data, align, cores):
        calls.append((seed, str(data), align))
        return pd.DataFrame({"top1": 0.1, "top5": 0.3}, index=list(cross_subject.SUBJECTS))

    monkeypatch.setattr(cross_subject, "run", fake_run)
    monkeypatch.setattr(cross_subject, "copy_workflow", lambda workdir: None)
    out = tmp_path / "t.tsv"
    for regime in ("idiosyncratic", "disjoint"):
        calls.clear()
        table = cross_subject.measure([regime], [0, 1], ["none", "mmd"], 1, out, list(cross_subject.SUBJECTS))
        for seed in (0, 1):
            part = table[table["replicate"] == seed]
            assert sorted(part["heldout"].unique()) == list(cross_subject.SUBJECTS), (regime, seed)
            assert sorted(part["method"]) == sorted(["ceiling", "none", "mmd"] * 3)
            # a method's run holds out one subject; a ceiling's none (every subject labelled) or, in
            # disjoint, the two others
            ceilings = [align["heldout"] for s, _, align in calls if s == seed and len(align["heldout"]) != 1]
            if regime == "disjoint":
                assert sorted(map(len, ceilings)) == [2, 2, 2]
            else:
                assert ceilings == [[]]


def test_a_method_at_another_weight_changes_only_the_terms_it_switches_on():
    assert cross_subject.method_config("adversarial@0.3")["loss"] == {
        "domain": 0.0,
        "target_mbm": 0.0,
        "adversarial": 0.3,
    }
    combined = cross_subject.method_config("combined@2")
    assert combined["loss"] == {"domain": 2.0, "target_mbm": 2.0, "adversarial": 2.0}
    assert combined["domain_method"] == "coral" and cross_subject.METHODS["combined"]["loss"]["domain"] == 0.5
    assert cross_subject.method_config("mmd") == cross_subject.METHODS["mmd"]
    for bad, message in (("srm@1", "switches on no loss term"), ("dann@1", "unknown method")):
        with pytest.raises(ValueError, match=message):
            cross_subject.method_config(bad)


def test_the_selection_task_refuses_srm_before_any_run(monkeypatch, capsys):
    """Its two subjects share no training clip, so SRM cannot be fitted: refused before any run."""
    monkeypatch.setattr(cross_subject, "run", lambda *args: pytest.fail("a run started"))
    monkeypatch.setattr(sys, "argv", ["cross_subject.py", "--select", "--methods", "mmd", "srm"])
    with pytest.raises(SystemExit):
        cross_subject.main()
    assert "--select: srm needs clips both subjects watched" in capsys.readouterr().err


def test_the_selection_task_never_reads_a_test_segment_and_scores_each_pseudo_target_in_turn(monkeypatch, tmp_path):
    """The selection task's data are the config's training segments only, split between two subjects with
    none in common, the last training segment as the pseudo-test. Each subject is the pseudo-target in turn;
    the run holding out the other is its ceiling (its own labels alone)."""
    data = cross_subject.selection_overlay()["data"]
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["data"]["segments"]
    segments = data["segments"]
    first, second = segments["train"], segments["subject_train"][data["subjects"][1]]
    assert not set(first) & set(second) and not (set(first) | set(second)) & set(segments["test"])
    assert set(first) | set(second) | set(segments["test"]) <= set(config["train"])
    assert not set(config["test"]) & {seg for part in (first, second, segments["test"]) for seg in part}

    scores = {"sub-01": 0.2, "sub-02": 0.4}
    calls = []

    def fake_run(workdir, seed, data, align, cores):
        calls.append(align)
        bonus = 0.1 if align["loss"]["adversarial"] else 0.0  # the adapted pseudo-target gains
        held = align["heldout"][0]
        rows = {s: scores[s] + (bonus if s == held else 0.3) for s in scores}  # labelled: its own labels
        return pd.DataFrame({"top1": 0.0, "top5": pd.Series(rows)})

    monkeypatch.setattr(cross_subject, "run", fake_run)
    monkeypatch.setattr(cross_subject, "copy_workflow", lambda workdir: None)
    table = cross_subject.select([0], ["adversarial@0.3"], 1, tmp_path / "s.tsv")
    assert [align["heldout"] for align in calls] == [["sub-01"], ["sub-02"], ["sub-01"], ["sub-02"]]
    wide = table.pivot_table(index="heldout", columns="method", values="top5")
    # floor: held out without adaptation; ceiling: labelled, in the run holding out the other
    assert wide.loc["sub-01"].to_dict() == pytest.approx({"none": 0.2, "ceiling": 0.5, "adversarial@0.3": 0.3})
    assert wide.loc["sub-02"].to_dict() == pytest.approx({"none": 0.4, "ceiling": 0.7, "adversarial@0.3": 0.5})
    share = recovered(table).set_index("method").loc["adversarial@0.3", "recovered_share"]
    assert share == pytest.approx(0.1 / 0.3)
    # --summarize reads a selection table back (it has no labelled subjects' columns to compare with)
    monkeypatch.setattr(sys, "argv", ["cross_subject.py", "--summarize", str(tmp_path / "s.tsv")])
    monkeypatch.chdir(tmp_path)
    cross_subject.main()
    summary = pd.read_csv(tmp_path / "cross_subject_summary.tsv", sep="\t").set_index(["measure", "method"])
    assert summary.loc[("top5", "adversarial@0.3"), "recovered_share"] == pytest.approx(0.1 / 0.3)


def test_the_subject_kernel_reaches_every_run_floor_and_ceiling_included(monkeypatch, tmp_path):
    """``--subject-kernel`` sets align.subject_kernel in every run's overlay: a table compares methods on the
    same architecture, its floor and ceiling too."""
    overlays = []

    def fake_snakemake(command, cwd, **kwargs):
        overlay = yaml.safe_load((cwd / "overlay.yaml").read_text())
        overlays.append(overlay["align"])
        metrics = cwd / f"results/r{overlay['seed']}/align/metrics.tsv"
        metrics.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"subject": s, "n_way": 50, "split": "test", "top1": 0.1, "top5": 0.3} for s in cross_subject.SUBJECTS]
        pd.DataFrame(rows).to_csv(metrics, sep="\t", index=False)
        return type("Done", (), {"returncode": 0, "stderr": ""})()

    monkeypatch.setattr(cross_subject.subprocess, "run", fake_snakemake)
    monkeypatch.setattr(cross_subject, "copy_workflow", lambda workdir: None)
    monkeypatch.setattr(cross_subject, "ALIGN", {})
    argv = ["cross_subject.py", "--regimes", "disjoint", "--replicates", "0", "--methods", "mmd@0.5"]
    monkeypatch.setattr(
        sys, "argv", [*argv, "--heldout", "sub-01", "--subject-kernel", "3", "--out", str(tmp_path / "t.tsv")]
    )
    cross_subject.main()
    assert len(overlays) == 3  # the ceiling, the floor and the method
    assert all(align["subject_kernel"] == 3 for align in overlays)


def test_summarize_merges_runs_only_where_their_shared_floors_and_ceilings_agree(monkeypatch, tmp_path):
    """Two runs measured other methods, each with its own floor and ceiling: --summarize puts them side by
    side, one row per configuration. A floor that differs between the runs (another commit's stimuli) is an
    error naming both tables, before any share is computed."""

    def table(path, method, value, floor=0.2):
        rows = [
            {"regime": "r", "replicate": replicate, "heldout": "sub-01", "method": name, "top1": v / 4, "top5": v}
            for replicate in range(2)
            for name, v in (("none", floor + replicate / 100), ("ceiling", 0.6), (method, value))
        ]
        pd.DataFrame(rows).to_csv(path, sep="\t", index=False)

    table(tmp_path / "a.tsv", "mmd", 0.3)
    table(tmp_path / "b.tsv", "coral", 0.4)
    merged = cross_subject.merged([tmp_path / "a.tsv", tmp_path / "b.tsv"])
    assert len(merged) == 8 and not merged.duplicated(cross_subject.KEY).any()
    shares = recovered(merged).set_index("method")["recovered_share"]
    assert shares.to_dict() == pytest.approx(
        {"mmd": (0.1 / 0.4 + 0.09 / 0.39) / 2, "coral": (0.2 / 0.4 + 0.19 / 0.39) / 2}
    )
    table(tmp_path / "c.tsv", "coral", 0.4, floor=0.25)
    monkeypatch.setattr(
        sys, "argv", ["cross_subject.py", "--summarize", str(tmp_path / "a.tsv"), str(tmp_path / "c.tsv")]
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"'method': 'none'.*top1 is 0.05 in .*a.tsv but 0.0625 in .*c.tsv"):
        cross_subject.main()
    assert not (tmp_path / "cross_subject_summary.tsv").exists()
