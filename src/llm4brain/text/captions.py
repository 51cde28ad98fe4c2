"""``reference_captions``: the references TSV → ``results/text/captions.h5``, checked against the segments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from llm4brain.artifacts import atomic_h5, write_keys, write_strings
from llm4brain.runtime import LOG


def reference_captions(tsv: str | Path, out_path: str | Path, segments: list[str], params: dict[str, Any]) -> None:
    """Keep the captions of the configured segments, one row per ``(segment, tr)``, sorted."""
    table = pd.read_csv(tsv, sep="\t", dtype={"segment": str})
    missing = {"segment", "tr", "caption"} - set(table.columns)
    if missing:
        raise ValueError(f"{tsv}: missing columns {sorted(missing)}")
    table = table[table["segment"].isin(segments)].sort_values(["segment", "tr"], kind="stable")
    absent = sorted(set(segments) - set(table["segment"]))
    if absent:
        raise ValueError(f"{tsv}: no captions for segments {absent}")
    if table.duplicated(["segment", "tr"]).any():
        raise ValueError(f"{tsv}: more than one caption for some (segment, tr)")
    if table["caption"].isna().any():
        raise ValueError(f"{tsv}: empty captions")
    with atomic_h5(out_path, "captions", params) as f:
        write_keys(f, table["segment"].tolist(), table["tr"].tolist())
        write_strings(f, "caption", table["caption"].astype(str).tolist())
    LOG.info("%d captions for %d segments", len(table), len(segments))

