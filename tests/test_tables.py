"""llm4brain.tables.read_tsv, the reader every user table goes through: typed columns, and errors that name
the file, the row (its line number) and the column."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from llm4brain.fmri.discover import participants
from llm4brain.fmri.runs import InputError, Run, read_confounds, read_run
from llm4brain.sections import CaptionsConfig
from llm4brain.tables import TableError, read_tsv, row_of
from llm4brain.text.captions import reference_captions


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_typed_columns_nullable_values_and_row_numbers(tmp_path):
    table = read_tsv(
        write(tmp_path / "t.tsv", "onset\tduration\tsegment\tnote\n1.5\t2\tseg01\tx\n\n3\tn/a\tseg02\t\n"),
        columns={"onset": float, "segment": str},
        optional={"duration": float, "tr": int},
        nullable=("duration",),
    )
    assert table["onset"].tolist() == [1.5, 3.0] and table["onset"].dtype == np.float64
    assert table["duration"].iloc[0] == 2.0 and np.isnan(table["duration"].iloc[1])
    assert table["segment"].tolist() == ["seg01", "seg02"] and table["note"].tolist() == ["x", ""]
    assert [row_of(table, i) for i in range(2)] == [2, 4]  # the blank line 3 is skipped but counted


@pytest.mark.parametrize(
    "text, columns, message",
    [
        ("onset\tsegment\n0\ta\nsoon\tb\n", {"onset": float}, "row 3, column 'onset': 'soon' is not a finite number"),
        ("onset\tsegment\ninf\ta\n", {"onset": float}, "row 2, column 'onset': 'inf' is not a finite number"),
        ("segment\ttr\tcaption\ns\t1.5\tc\n", {"tr": int}, "row 2, column 'tr': '1.5' is not an integer"),
        (
            "segment\ttr\tcaption\ns\tn/a\tc\n",
            {"tr": int},
            "row 2, column 'tr': missing value 'n/a' (expected an integer)",
        ),
        ("segment\ttr\n\ts\n", {"segment": str}, "row 2, column 'segment': missing value ''"),
        ("segment\ttr\n", {"caption": str}, "missing columns ['caption'] (the header has ['segment', 'tr'])"),
        ("a\tb\n1\t2\n1\t2\t3\n", {"a": int}, "row 3: 3 fields, but the header has 2 columns"),
        ("a\ta\n1\t2\n", {"a": int}, "row 1: columns ['a'] appear more than once"),
        ("", {"a": int}, "empty table"),
    ],
)
def test_malformed_tables_name_file_row_and_column(tmp_path, text, columns, message):
    path = write(tmp_path / "bad.tsv", text)
    with pytest.raises(TableError, match=re.escape(f"{path}: {message}")):
        read_tsv(path, columns=columns)


def test_bytes_that_are_not_utf8(tmp_path):
    path = write(
        tmp_path / "captions.tsv", b"segment\ttr\tcaption\nseg01\t0\ta dog\n" + b"seg01\t1\ta caf\xe9\n"
    )  # Latin-1
    with pytest.raises(TableError, match=re.escape(f"{path}: row 3, column 'caption': bytes b'\\xe9' are not UTF-8")):
        read_tsv(path, columns={"caption": str})
    assert isinstance(TableError("x"), InputError)  # a bad table is bad input, whichever stage reads it


def test_events_tables(tmp_path):
    bold = tmp_path / "sub-01_task-movie_run-1_bold.nii.gz"
    events = write(
        tmp_path / "sub-01_task-movie_run-1_events.tsv", "onset\tduration\tstim_file\n4.0\t12\tclips/seg01.mp4\n"
    )
    run = read_run(bold, events)
    assert (run.segment, run.onset, run.duration, run.confounds) == ("seg01", 4.0, 12.0, None)
    write(events, "onset\tduration\tsegment\n4,0\t12\tseg01\n")  # a decimal comma
    with pytest.raises(TableError, match=re.escape(f"{events}: row 2, column 'onset': '4,0' is not a finite number")):
        read_run(bold, events)


def test_confounds_tables(tmp_path):
    bold = tmp_path / "sub-01_task-rest_space-T1w_desc-preproc_bold.nii.gz"
    confounds = write(
        tmp_path / "sub-01_task-rest_desc-confounds_timeseries.tsv",
        "csf\ttrans_x\tframewise_displacement\nn/a\t0.1\tn/a\n0.5\t0.2\t0.3\n0.7\tbig\t0.1\n",
    )
    run = Run(bold, bold, "rest", None, None, confounds)
    np.testing.assert_array_equal(read_confounds(run, ["csf"], 3), [[0.0], [0.5], [0.7]])  # n/a → 0
    with pytest.raises(TableError, match=re.escape(f"{confounds}: row 4, column 'trans_x': 'big' is not a finite")):
        read_confounds(run, ["csf", "trans_x"], 3)
    with pytest.raises(InputError, match=re.escape(f"{confounds}: 3 rows but {bold.name} has 4 volumes")):
        read_confounds(run, ["csf"], 4)


def test_captions_tables(tmp_path):
    path = write(tmp_path / "captions.tsv", "segment\ttr\tcaption\nseg01\t0\ta dog runs\nseg01\tone\ta cat\n")
    with pytest.raises(TableError, match=re.escape(f"{path}: row 3, column 'tr': 'one' is not an integer")):
        reference_captions(tsv=path, out_path=tmp_path / "c.h5", segments=["seg01"], captions_config=CaptionsConfig())
    write(path, "segment\ttr\tcaption\nseg01\t0\ta dog runs\nseg01\t-1\ta cat\n")
    with pytest.raises(TableError, match=re.escape(f"{path}: row 3, column 'tr': -1 is negative")):
        reference_captions(tsv=path, out_path=tmp_path / "c.h5", segments=["seg01"], captions_config=CaptionsConfig())
    write(path, "segment\ttr\tcaption\nseg01\t0\ta dog runs\nseg01\t0\ta dog runs\n")
    with pytest.raises(TableError, match=re.escape(f"{path}: row 3: the same caption twice for (seg01, 0)")):
        reference_captions(tsv=path, out_path=tmp_path / "c.h5", segments=["seg01"], captions_config=CaptionsConfig())
    assert not (tmp_path / "c.h5").exists()


def test_participants_tables(tmp_path):
    write(tmp_path / "participants.tsv", "participant_id\tage\nsub-01\t30\n02\tn/a\n")
    assert participants(tmp_path, "bids") == ["sub-01", "sub-02"]  # BIDS allows the label without its prefix
    write(tmp_path / "participants.tsv", "subject\tage\nsub-01\t30\n")
    with pytest.raises(TableError, match=r"participants\.tsv: missing columns \['participant_id'\]"):
        participants(tmp_path, "bids")
