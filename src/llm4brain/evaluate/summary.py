"""``summarize_replicates``: every replicate's scores side by side, and the paired tests pooled over them.

One seed is one draw of the training (and, in the demo, of the data): a claim is made on the replicates.
``summary.tsv`` gives each subject × source × metric its mean, standard deviation, minimum, maximum and every
replicate's value (column ``r{seed}``); ``pooled_tests.tsv`` tests fMRI against shuffled fMRI and the full
student against each ablated one on the clip pairs of every replicate at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llm4brain.artifacts import atomic_path
from llm4brain.evaluate.stats import paired_permutation, replicate_sign_flip
from llm4brain.layout import replicate_name
from llm4brain.tables import read_tsv

KEYS = ("subject", "heldout", "source")
MARKS = ("voxel_selection",)  # text carried beside the keys: test-reliability marks test-selected voxels
CLIP = ("segment", "tr")


def replicate_column(seed: int) -> str:
    """The column of the replicate seeded ``seed``: its folder's name."""
    return replicate_name(seed)


def read_replicates(paths: dict[int, str | Path], extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """The tables of every replicate (seed → ``metrics.tsv`` or ``per_clip.tsv``) stacked, with a ``replicate``
    column; metric columns become numbers (a metric that could not run, ``unavailable``, becomes NaN)."""
    tables = []
    for seed, path in paths.items():
        table = read_tsv(path, columns={"subject": str, "heldout": str, "source": str, **dict.fromkeys(extra, str)})
        table["heldout"] = table["heldout"] == "True"
        for column in table.columns.difference([*KEYS, *MARKS, *extra]):
            table[column] = pd.to_numeric(table[column], errors="coerce")
        tables.append(table.assign(replicate=seed))
    return pd.concat(tables, ignore_index=True)


def summarize(metrics: pd.DataFrame, replicates: list[int]) -> pd.DataFrame:
    """One row per subject × source × metric: ``n_replicates``, ``mean``, ``sd`` (ddof 1; NaN for one
    replicate), ``min``, ``max`` and each replicate's value (``r{seed}``) of ``metrics`` (stacked
    ``metrics.tsv`` rows, :func:`read_replicates`). CI bounds and ``n`` are per replicate and left out; a
    metric no replicate could compute is left out."""
    marks = [m for m in MARKS if m in metrics.columns]
    names = [
        c
        for c in metrics.columns
        if c not in (*KEYS, *marks, "n", "replicate") and not c.endswith(("_ci_low", "_ci_high"))
    ]
    long = metrics.melt(id_vars=[*KEYS, *marks, "replicate"], value_vars=names, var_name="metric")
    long = long.dropna(subset=["value"])
    wide = long.pivot_table(index=[*KEYS, *marks, "metric"], columns="replicate", values="value", sort=False)
    wide = wide.reindex(columns=[r for r in replicates if r in wide.columns])
    stats = pd.DataFrame(
        {
            "n_replicates": wide.count(axis=1),
            "mean": wide.mean(axis=1),
            "sd": wide.std(axis=1, ddof=1),
            "min": wide.min(axis=1),
            "max": wide.max(axis=1),
        }
    )
    wide.columns = [replicate_column(r) for r in wide.columns]
    order = {name: i for i, name in enumerate(names)}
    table = pd.concat([stats, wide], axis=1).reset_index()
    # subjects and sources as metrics.tsv lists them
    first = table.groupby(["subject", "heldout", "source"], sort=False).ngroup()
    return (
        table.assign(_group=first, _metric=table["metric"].map(order))
        .sort_values(["_group", "_metric"], kind="stable")
        .drop(columns=["_group", "_metric"])
        .reset_index(drop=True)
    )


def pooled_tests(per_clip: pd.DataFrame, replicates: list[int], n_perm: int, seed: int) -> pd.DataFrame:
    """Per subject (held out and labelled apart) and tested metric: ``fmri`` against ``shuffled`` and against
    each ``fmri-{ablation}``. Each row gives ``n_replicates``, ``n`` (clip pairs in all), ``mean_difference``
    (the mean over replicates of each one's mean per-clip difference), each replicate's mean difference
    (``r{seed}``) and two one-sided p-values: ``p_replicates``, the headline, an exact sign flip over the replicates (a
    trained model is the unit: :func:`~llm4brain.evaluate.stats.replicate_sign_flip`), and ``p_clips``, a
    sign flip over every clip pair with the models held fixed, each replicate weighing the same
    (:func:`~llm4brain.evaluate.stats.paired_permutation` with strata), secondary."""
    metrics = [c for c in per_clip.columns if c not in (*KEYS, *CLIP, "replicate")]
    rows: list[dict[str, Any]] = []
    for (subject, heldout), table in per_clip.groupby(["subject", "heldout"], sort=False):
        sources = list(dict.fromkeys(table["source"]))
        if "fmri" not in sources:
            continue
        others = [s for s in ["shuffled", *[s for s in sources if s.startswith("fmri-")]] if s in sources]
        fmri = table[table["source"] == "fmri"].set_index(["replicate", *CLIP])
        for other in others:
            pairs = fmri.merge(
                table[table["source"] == other].set_index(["replicate", *CLIP]),
                left_index=True,
                right_index=True,
                suffixes=("", "_other"),
            )
            for metric in metrics:
                both = pairs[[metric, f"{metric}_other"]].dropna()
                if both.empty:
                    continue
                strata = both.index.get_level_values("replicate").to_numpy()
                difference = (both[metric] - both[f"{metric}_other"]).groupby(level="replicate", sort=False).mean()
                rows.append(
                    {
                        "subject": subject,
                        "heldout": bool(heldout),
                        "comparison": f"fmri > {other}",
                        "metric": metric,
                        "n_replicates": len(difference),
                        "n": len(both),
                        "mean_difference": float(difference.mean()),
                        **{replicate_column(r): difference.get(r, np.nan) for r in replicates},
                        "p_replicates": replicate_sign_flip(difference.to_numpy()),
                        "p_clips": paired_permutation(
                            both[metric].to_numpy(), both[f"{metric}_other"].to_numpy(), n_perm, seed, strata
                        ),
                    }
                )
    return pd.DataFrame(rows)


def summarize_replicates(
    *,
    metrics_paths: list[str | Path],
    per_clip_paths: list[str | Path],
    replicates: list[int],
    n_permutations: int,
    seed: int,
    summary_path: str | Path,
    tests_path: str | Path,
) -> None:
    """Write ``summary.tsv`` (:func:`summarize`) and ``pooled_tests.tsv`` (:func:`pooled_tests`) from each
    replicate's ``metrics.tsv`` and ``per_clip.tsv`` (in ``replicates`` order).

    Args:
        metrics_paths: each replicate's ``results/r{seed}/eval/metrics.tsv``, in ``replicates`` order.
        per_clip_paths: each replicate's ``results/r{seed}/eval/per_clip.tsv``, in ``replicates`` order.
        replicates: the replicates' seeds (the config's ``replicates``), which name the ``r{seed}`` columns.
        n_permutations: random sign flips of the clip-level pooled tests (``evaluate.n_permutations``).
        seed: seeds the clip-level sign flips (the config's ``seed``).
        summary_path: ``summary.tsv``, to write.
        tests_path: ``pooled_tests.tsv``, to write.

    Raises:
        TableError: a table is unreadable or lacks its ``subject``, ``heldout``, ``source`` (or, per clip,
            ``segment``) column.
        ValueError: the path lists do not give one table per replicate, or there are more than 20 replicates
            (the exact sign flip enumerates 2^R patterns).
    """
    metrics = read_replicates(dict(zip(replicates, metrics_paths, strict=True)))
    per_clip = read_replicates(dict(zip(replicates, per_clip_paths, strict=True)), extra=("segment",))
    per_clip["tr"] = per_clip["tr"].astype(int)
    with atomic_path(summary_path) as tmp:
        summarize(metrics, replicates).to_csv(tmp, sep="\t", index=False, float_format="%.4f")
    with atomic_path(tests_path) as tmp:
        pooled_tests(per_clip, replicates, n_permutations, seed).to_csv(tmp, sep="\t", index=False, float_format="%.4g")
