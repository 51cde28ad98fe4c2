"""``reference_captions``: the references TSV → ``results/text/captions.h5``, checked against the segments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from llm4brain.artifacts import atomic_h5, write_keys, write_strings
from llm4brain.runtime import LOG


def reference_captions(tsv: str | Path, out_path: str | Path, segments: list[str], params: dict[str, Any]) -> None:
    """Keep the captions of the configured segments, sorted by ``(segment, tr)``. A clip may have several
    rows (annotators, captioners): all are references for scoring, the first is the one models train on."""
    table = pd.read_csv(tsv, sep="\t", dtype={"segment": str})
    missing = {"segment", "tr", "caption"} - set(table.columns)
    if missing:
        raise ValueError(f"{tsv}: missing columns {sorted(missing)}")
    table = table[table["segment"].isin(segments)].sort_values(["segment", "tr"], kind="stable")
    absent = sorted(set(segments) - set(table["segment"]))
    if absent:
        raise ValueError(f"{tsv}: no captions for segments {absent}")
    if table["caption"].isna().any() or (table["caption"].astype(str).str.strip() == "").any():
        raise ValueError(f"{tsv}: empty captions")
    if table.duplicated(["segment", "tr", "caption"]).any():
        raise ValueError(f"{tsv}: the same caption twice for some (segment, tr)")
    with atomic_h5(out_path, "captions", params) as f:
        write_keys(f, table["segment"].tolist(), table["tr"].tolist())
        write_strings(f, "caption", table["caption"].astype(str).tolist())
    LOG.info("%d captions of %d clips in %d segments", len(table), len(table.drop_duplicates(["segment", "tr"])),
             len(segments))

