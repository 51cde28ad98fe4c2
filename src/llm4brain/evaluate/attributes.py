"""``score_attributes``: how often the decoded captions name each scene attribute right (count, size, colour,
shape, motion, background), against the scene ground truth the demo simulator writes (``scenes.tsv`` and its
BIDS sidecar ``scenes.json``, whose ``Levels`` list every value an attribute can take)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from llm4brain.artifacts import atomic_path
from llm4brain.evaluate.score import read_decoded
from llm4brain.runtime import LOG

Vocabulary = dict[str, tuple[str, ...]]


def read_scenes(tsv: str | Path) -> tuple[pd.DataFrame, Vocabulary]:
    """The ground-truth table (one row per ``(segment, tr)``) and each attribute's levels (from the sidecar
    next to it). Errors name the file, and the row and column of a value that is not a level."""
    tsv = Path(tsv)
    sidecar = tsv.with_suffix(".json")
    if not sidecar.is_file():
        raise FileNotFoundError(f"{tsv}: no sidecar {sidecar.name} with each attribute's Levels")
    levels = {name: tuple(str(v) for v in column["Levels"]) for name, column in json.loads(sidecar.read_text()).items()}
    owners: dict[str, str] = {}
    for name, values in levels.items():
        for value in values:
            if value in owners:
                raise ValueError(
                    f"{sidecar}: level {value!r} belongs to both {owners[value]} and {name}: a caption "
                    "word could not say which attribute it names"
                )
            owners[value] = name
    table = pd.read_csv(tsv, sep="\t", dtype={"segment": str})
    missing = {"segment", "tr", *levels} - set(table.columns)
    if missing:
        raise ValueError(f"{tsv}: missing columns {sorted(missing)}")
    for name, values in levels.items():
        bad = ~table[name].astype(str).isin(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{tsv}: row {row + 2}, column {name}: {table[name].iloc[row]!r} is not one of {values}")
    if table.duplicated(["segment", "tr"]).any():
        raise ValueError(f"{tsv}: some (segment, tr) has two rows")
    return table, levels


def caption_attributes(caption: str, levels: Vocabulary) -> dict[str, str | None]:
    """The value a caption names for each attribute: the level among its words (a level followed by an 's'
    counts, for plural shapes). None when it names no level or two different ones: both count as wrong."""
    words = re.findall(r"[a-z]+", caption.lower())
    named = {}
    for name, values in levels.items():
        found = {value for value in values for word in words if word in (value, f"{value}s")}
        named[name] = found.pop() if len(found) == 1 else None
    return named


def attribute_table(decoded: pd.DataFrame, scenes: pd.DataFrame, levels: Vocabulary) -> pd.DataFrame:
    """Per source of ``decoded`` (columns segment, tr, source, caption) and attribute: the accuracy against
    ``scenes`` (a caption that names no value, or several, is wrong), the share of captions that name one
    value, and chance (1 / number of levels: every level is equally likely in the demo)."""
    truth = scenes.set_index(["segment", "tr"])
    rows = []
    for source, group in decoded.groupby("source", sort=False):
        keys = pd.MultiIndex.from_arrays([group["segment"], group["tr"].astype(int)])
        absent = keys.difference(truth.index)
        if len(absent):
            raise ValueError(f"no scene ground truth for clips {list(absent[:3])} (source {source})")
        named = pd.DataFrame([caption_attributes(c, levels) for c in group["caption"]], columns=list(levels))
        true = truth.loc[keys, list(levels)].reset_index(drop=True).astype(str)
        for name, values in levels.items():
            rows.append(
                {
                    "source": source,
                    "attribute": name,
                    "n": len(group),
                    "accuracy": float((named[name] == true[name]).mean()),
                    "named": float(named[name].notna().mean()),
                    "chance": 1 / len(values),
                }
            )
    return pd.DataFrame(rows)


def score_attributes(
    eval_paths: list[str | Path], scenes_tsv: str | Path, out_path: str | Path, heldout: list[str]
) -> None:
    """Write ``attributes.tsv``: one row per subject × source × attribute (every decoded file of a subject:
    its main file and its ablated students').

    Args:
        eval_paths: each subject's decoded captions (``results/r{seed}/eval/{subject}.h5``) and its ablated
            students' files (sources ``fmri-{ablation}``).
        scenes_tsv: the demo's scene ground truth (``{data.root}/scenes.tsv``: ``segment``, ``tr`` and one
            column per attribute), with its sidecar ``scenes.json`` beside it listing each attribute's
            ``Levels``.
        out_path: ``attributes.tsv``, to write (``subject, heldout, source, attribute, n, accuracy, named,
            chance``).
        heldout: the replicate's held-out subjects, flagged in the ``heldout`` column.

    Raises:
        FileNotFoundError: ``scenes.json`` is not beside ``scenes_tsv``.
        ValueError: a level belongs to two attributes, a column is missing, a value is not one of its
            attribute's levels, a clip has two rows, or a decoded clip has no ground truth.
    """
    scenes, levels = read_scenes(scenes_tsv)
    tables: dict[str, list[pd.DataFrame]] = {}
    for path in eval_paths:
        table, attrs = read_decoded(path)
        tables.setdefault(str(attrs["subject"]), []).append(table)
    parts = []
    for subject, subject_tables in tables.items():
        table = attribute_table(pd.concat(subject_tables, ignore_index=True), scenes, levels)
        parts.append(table.assign(subject=subject, heldout=subject in heldout))
        fmri = table[table["source"] == "fmri"].set_index("attribute")["accuracy"]
        LOG.info("%s fMRI captions: %s", subject, fmri.round(2).to_dict())
    out = pd.concat(parts, ignore_index=True)
    out = out[["subject", "heldout", "source", "attribute", "n", "accuracy", "named", "chance"]]
    with atomic_path(out_path) as tmp:
        out.to_csv(tmp, sep="\t", index=False, float_format="%.4f")
