"""The ablation table: latent identification of the full aligner next to runs with one loss term off."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from llm4brain.artifacts import atomic_path


def ablation_table(
    full: str | Path, ablations: list[str | Path], names: list[str], out_path: str | Path
) -> pd.DataFrame:
    """One row per (model, subject): ``model`` is ``full`` or the ablation's name; columns as the align
    stage's metrics.tsv (top-1/top-5 identification with their chance levels)."""
    tables = [pd.read_csv(full, sep="\t").assign(model="full")]
    tables += [pd.read_csv(path, sep="\t").assign(model=name) for name, path in zip(names, ablations, strict=True)]
    table = pd.concat(tables, ignore_index=True)
    table = table[["model"] + [c for c in table.columns if c != "model"]]
    with atomic_path(out_path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.4f")
    return table
