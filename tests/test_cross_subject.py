"""The arithmetic of benchmarks/cross_subject.py: the recovered share of the floor-to-ceiling gap per
replicate, and the replicate-level test."""

from __future__ import annotations

import sys

import pandas as pd
import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from cross_subject import recovered  # noqa: E402


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
