"""``reference_captions``: the references TSV → ``results/text/captions.h5``, checked against the segments."""

from __future__ import annotations

from pathlib import Path

from llm4brain.artifacts import atomic_h5, write_keys, write_strings
from llm4brain.runtime import LOG
from llm4brain.sections import CaptionsConfig
from llm4brain.tables import TableError, read_tsv, row_of


def reference_captions(
    *, tsv: str | Path, out_path: str | Path, segments: list[str], captions_config: CaptionsConfig
) -> None:
    """Keep the captions of the configured segments, sorted by ``(segment, tr)``. A clip may have several
    rows (annotators, captioners): all are references for scoring, the first is the one models train on.

    Args:
        tsv: the references table (``data.captions``): ``segment``, ``tr``, ``caption``.
        out_path: the captions artifact (``text/captions.h5``).
        segments: the segments whose captions are kept (every other segment's rows are left out).
        captions_config: the ``captions`` section, recorded in the artifact's ``config_hash``.

    Raises:
        TableError: a malformed table (naming its row and column), a caption given twice for a clip, or a
            segment without captions.
    """
    table = read_tsv(tsv, columns={"segment": str, "tr": int, "caption": str})
    negative = table.index[table["tr"] < 0]
    if len(negative):
        first = negative[0]
        raise TableError(f"{tsv}: row {row_of(table, first)}, column 'tr': {table['tr'][first]} is negative")
    twice = table.index[table.duplicated(["segment", "tr", "caption"])]
    if len(twice):
        first = twice[0]
        raise TableError(
            f"{tsv}: row {row_of(table, first)}: the same caption twice for "
            f"({table['segment'][first]}, {table['tr'][first]})"
        )
    table = table[table["segment"].isin(segments)].sort_values(["segment", "tr"], kind="stable")
    absent = sorted(set(segments) - set(table["segment"]))
    if absent:
        raise TableError(f"{tsv}: no captions for segments {absent}")
    with atomic_h5(out_path, "captions", captions_config.to_dict()) as f:
        write_keys(f, table["segment"].tolist(), table["tr"].tolist())
        write_strings(f, "caption", table["caption"].astype(str).tolist())
    LOG.info(
        "%d captions of %d clips in %d segments",
        len(table),
        len(table.drop_duplicates(["segment", "tr"])),
        len(segments),
    )
