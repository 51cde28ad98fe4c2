"""Attribute accuracy against the demo's scene ground truth, checked on hand-labelled captions."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from llm4brain.demo.scenes import ATTRIBUTES
from llm4brain.demo.simulate import write_scenes
from llm4brain.evaluate.attributes import attribute_table, caption_attributes, read_scenes, score_attributes

LEVELS = {name: tuple(values) for name, values in ATTRIBUTES.items()}
# (segment, tr): count, size, colour, shape, motion, background
TRUTH = {
    ("a", 0): ("two", "small", "red", "circle", "left", "black"),
    ("a", 1): ("one", "large", "blue", "square", "up", "white"),
    ("b", 0): ("three", "small", "green", "triangle", "down", "gray"),
    ("b", 1): ("one", "small", "yellow", "circle", "right", "white"),
}
# decoded captions, and by hand which attributes each gets right (1) or wrong (0), in ATTRIBUTES order
HAND = {
    ("a", 0): ("two small red circles moving right on a black background", (1, 1, 1, 1, 0, 1)),
    # no size and no background named: both count as wrong
    ("a", 1): ("one blue square moving up", (1, 0, 1, 1, 1, 0)),
    # two colours named: the colour is ambiguous and counts as wrong; 'squares' is a plural shape
    ("b", 0): ("three small green and red squares moving down on a gray background", (1, 1, 0, 0, 1, 1)),
    ("b", 1): ("one large yellow circle moving right on a black background", (1, 0, 1, 1, 1, 0)),
}


@pytest.fixture()
def scenes_tsv(tmp_path: Path) -> Path:
    write_scenes([(s, t, *values) for (s, t), values in TRUTH.items()], tmp_path / "scenes.tsv")
    return tmp_path / "scenes.tsv"


def test_caption_attributes_reads_the_demo_vocabulary():
    assert caption_attributes("Two small red circles moving left on a black background.", LEVELS) == dict(
        zip(ATTRIBUTES, TRUTH[("a", 0)], strict=True)
    )
    named = caption_attributes("one blue square moving up", LEVELS)
    assert named["size"] is None and named["background"] is None and named["shape"] == "square"
    assert caption_attributes("green and red squares", LEVELS)["colour"] is None


def test_attribute_table_against_hand_labelled_captions(scenes_tsv):
    scenes, levels = read_scenes(scenes_tsv)
    assert levels == LEVELS
    decoded = pd.DataFrame(
        [(s, t, "fmri", caption) for (s, t), (caption, _) in HAND.items()],
        columns=["segment", "tr", "source", "caption"],
    )
    table = attribute_table(decoded, scenes, levels).set_index("attribute")
    for j, name in enumerate(ATTRIBUTES):
        assert table.loc[name, "accuracy"] == pytest.approx(sum(hits[j] for _, hits in HAND.values()) / 4), name
    assert table["accuracy"].round(2).to_dict() == {
        "count": 1.0,
        "size": 0.5,
        "colour": 0.75,
        "shape": 0.75,
        "motion": 0.75,
        "background": 0.5,
    }
    assert table.loc["size", "named"] == 0.75 and table.loc["colour", "named"] == 0.75
    assert table["chance"].round(4).to_dict() == {
        "count": 0.3333,
        "size": 0.5,
        "colour": 0.2,
        "shape": 0.3333,
        "motion": 0.25,
        "background": 0.3333,
    }


def test_score_attributes_writes_every_subject_and_source(tmp_path, scenes_tsv):
    from llm4brain.artifacts import atomic_h5, write_keys, write_strings

    keys = list(HAND)
    with atomic_h5(tmp_path / "sub-01.h5", "eval") as f:
        write_keys(f, [s for s, _ in keys] * 2, [t for _, t in keys] * 2)
        write_strings(f, "source", ["fmri"] * 4 + ["shuffled"] * 4)
        write_strings(f, "caption", [c for c, _ in HAND.values()] + ["zzz"] * 4)
        write_strings(f, "reference", ["-"] * 8)
        f.attrs["subject"] = "sub-01"
    score_attributes([tmp_path / "sub-01.h5"], scenes_tsv, tmp_path / "attributes.tsv", heldout=["sub-01"])
    out = pd.read_csv(tmp_path / "attributes.tsv", sep="\t")
    assert list(out.columns) == ["subject", "heldout", "source", "attribute", "n", "accuracy", "named", "chance"]
    assert len(out) == 2 * 6 and out["heldout"].all()
    shuffled = out[out["source"] == "shuffled"]
    assert (shuffled["accuracy"] == 0).all() and (shuffled["named"] == 0).all()
    from llm4brain.evaluate.report import plot_attributes

    plot_attributes(tmp_path / "attributes.tsv", tmp_path / "attributes.png")
    assert (tmp_path / "attributes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_ground_truth_names_file_row_and_column(tmp_path, scenes_tsv):
    table = pd.read_csv(scenes_tsv, sep="\t")
    table.loc[2, "colour"] = "teal"
    table.to_csv(scenes_tsv, sep="\t", index=False)
    with pytest.raises(ValueError, match=r"scenes.tsv: row 4, column colour: 'teal'"):
        read_scenes(scenes_tsv)
    scenes_tsv.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match="scenes.json"):
        read_scenes(scenes_tsv)


def test_clip_without_ground_truth_is_an_error(scenes_tsv):
    scenes, levels = read_scenes(scenes_tsv)
    decoded = pd.DataFrame({"segment": ["c"], "tr": [0], "source": ["fmri"], "caption": ["one red circle"]})
    with pytest.raises(ValueError, match="no scene ground truth"):
        attribute_table(decoded, scenes, levels)


def test_demo_writes_scene_ground_truth_that_renders_its_captions(tiny_demo):
    """scenes.tsv holds each clip's attributes: the demo's captions are rendered from exactly these."""
    from llm4brain.demo.scenes import Scene

    scenes, levels = read_scenes(tiny_demo / "scenes.tsv")
    captions = pd.read_csv(tiny_demo / "captions.tsv", sep="\t")
    assert levels == LEVELS and len(scenes) == len(captions)
    rendered = [Scene(**{name: row[name] for name in ATTRIBUTES}).caption() for _, row in scenes.iterrows()]
    assert rendered == captions["caption"].tolist()
