"""The `llm4brain` command: help texts, SRT timing, errors that name the file."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from llm4brain.cli import main
from llm4brain.evaluate.new_run import srt_time, write_srt


def test_help_texts(capsys):
    for argv in (["--help"], ["decode", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "decode" in out and "--bold" in out and "--srt" in out


def test_srt_timing_follows_tr(tmp_path):
    table = pd.DataFrame(
        {
            "segment": "seg01",
            "tr": [0, 1, 2],
            "start": [0.0, 2.0, 4.0],
            "end": [2.0, 4.0, 6.0],
            "caption": ["a red circle", "a blue square", "a green triangle"],
        }
    )
    path = tmp_path / "c.srt"
    write_srt(table, path)
    blocks = path.read_text().strip().split("\n\n")
    assert len(blocks) == 3
    for i, block in enumerate(blocks):
        number, timing, text = block.split("\n")
        start, end = re.fullmatch(r"(\S+) --> (\S+)", timing).groups()
        assert int(number) == i + 1 and text == table["caption"][i]
        assert start == srt_time(2.0 * i) and end == srt_time(2.0 * (i + 1))
    assert srt_time(3723.5) == "01:02:03,500"


def test_unknown_subject_says_what_to_do(tmp_path, capsys):
    (tmp_path / "r0" / "instruct" / "model").mkdir(parents=True)  # one replicate's student
    code = main(
        [
            "decode",
            "--subject",
            "sub-99",
            "--bold",
            "x.nii.gz",
            "--events",
            "x.tsv",
            "--model",
            str(tmp_path),
            "--out",
            str(tmp_path / "c.tsv"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "sub-99.h5" in err and "data.subjects" in err
