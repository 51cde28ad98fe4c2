"""Bad input across stages: one clear error that names the file, and no partial output.

Library-level cases call each stage's entry point directly; config cases build the DAG (``snakemake -n``)
in a temporary copy of the workflow, where the error must come before any job runs.
"""

from __future__ import annotations

import errno
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import FMRI_PARAMS, TINY_SEGMENTS
from test_video import VIDEO, write_coded
from workflow_copy import make_copy

from llm4brain.artifacts import ArtifactError
from llm4brain.fmri.preprocess import preprocess_subject
from llm4brain.fmri.runs import InputError
from llm4brain.models.weights import load_weights
from llm4brain.sections import FmriConfig, VideoConfig
from llm4brain.video.features import cache_features
from llm4brain.video.frames import extract_frames
from llm4brain.video.preprocessing import data_config
from llm4brain.video.readers import VideoError


def subject_copy(tiny_demo: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A writable copy of sub-01, its first run's BOLD and events files."""
    subject = tmp_path / "sub-01"
    shutil.copytree(tiny_demo / "sub-01", subject)
    bold = sorted((subject / "func").glob("*_bold.nii.gz"))[0]
    return subject, bold, Path(str(bold).replace("_bold.nii.gz", "_events.tsv"))


def preprocess(tiny_demo: Path, subject: Path, out: Path) -> None:
    preprocess_subject(
        "sub-01", subject, tiny_demo / "roi_mask.nii.gz", out, TINY_SEGMENTS, 2.0, FmriConfig.from_dict(FMRI_PARAMS)
    )


def assert_no_output(out: Path) -> None:
    assert not out.exists(), out
    assert not list(out.parent.glob(f".{out.name}.tmp-*")), "temporary file left behind"


def rewrite_bold(bold: Path, data=None, tr_seconds: float | None = None) -> None:
    img = nib.load(bold)
    new = nib.Nifti1Image(
        np.asarray(img.dataobj) if data is None else data(np.asarray(img.dataobj)), img.affine, img.header
    )
    if tr_seconds is not None:
        new.header.set_zooms(img.header.get_zooms()[:3] + (tr_seconds,))
    nib.save(new, bold)


def test_bold_all_nan(tiny_demo, tmp_path):
    subject, bold, _ = subject_copy(tiny_demo, tmp_path)
    rewrite_bold(bold, data=lambda d: np.full(d.shape, np.nan, np.float32))
    with pytest.raises(InputError, match=r"sub-01: no usable voxels .*roi_mask\.nii\.gz"):
        preprocess(tiny_demo, subject, tmp_path / "out.h5")
    assert_no_output(tmp_path / "out.h5")


def test_header_tr_in_milliseconds(tiny_demo, tmp_path):
    subject, bold, _ = subject_copy(tiny_demo, tmp_path)
    rewrite_bold(bold, tr_seconds=2000.0)  # what some converters write: ms in a field whose unit says seconds
    with pytest.raises(InputError, match=rf"{bold.name}: header TR is 2000 s .*milliseconds stored as seconds"):
        preprocess(tiny_demo, subject, tmp_path / "out.h5")
    assert_no_output(tmp_path / "out.h5")


def test_events_without_onset(tiny_demo, tmp_path):
    subject, _, events = subject_copy(tiny_demo, tmp_path)
    pd.read_csv(events, sep="\t").drop(columns="onset").to_csv(events, sep="\t", index=False)
    with pytest.raises(InputError, match=rf"{events.name}: missing columns \['onset'\]"):
        preprocess(tiny_demo, subject, tmp_path / "out.h5")
    assert_no_output(tmp_path / "out.h5")


def test_events_with_a_non_numeric_onset(tiny_demo, tmp_path):
    subject, _, events = subject_copy(tiny_demo, tmp_path)
    table = pd.read_csv(events, sep="\t").astype({"onset": object})
    table.loc[0, "onset"] = "4 s"
    table.to_csv(events, sep="\t", index=False)
    with pytest.raises(InputError, match=rf"{events.name}: row 2, column 'onset': '4 s' is not a finite number"):
        preprocess(tiny_demo, subject, tmp_path / "out.h5")
    assert_no_output(tmp_path / "out.h5")


def test_events_beyond_end_of_run(tiny_demo, tmp_path):
    subject, bold, events = subject_copy(tiny_demo, tmp_path)
    table = pd.read_csv(events, sep="\t")
    table["onset"] += 600.0
    table.to_csv(events, sep="\t", index=False)
    with pytest.raises(InputError, match=rf"{bold.name}: run has \d+ volumes but segment"):
        preprocess(tiny_demo, subject, tmp_path / "out.h5")
    assert_no_output(tmp_path / "out.h5")


def test_disk_full_while_writing(tiny_demo, tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(h5py.Group, "create_dataset", full)
    with pytest.raises(OSError, match="No space left"):
        preprocess(tiny_demo, tiny_demo / "sub-01", tmp_path / "out.h5")
    assert_no_output(tmp_path / "out.h5")


def test_corrupt_video(tmp_path):
    video = tmp_path / "seg01.mp4"
    write_coded(video, n_frames=40, fps=8)
    data = bytearray(video.read_bytes())
    data[: len(data) // 2] = bytes(len(data) // 2)  # header and half the stream zeroed
    video.write_bytes(bytes(data))
    with pytest.raises(VideoError, match="seg01.mp4"):
        extract_frames(
            video, tmp_path / "frames.h5", 2.0, VideoConfig.from_dict(VIDEO), data_config(VideoConfig.from_dict(VIDEO))
        )
    assert_no_output(tmp_path / "frames.h5")


def test_corrupt_hdf5_artifact(tmp_path):
    frames = tmp_path / "seg01.h5"
    frames.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(ArtifactError, match=r"seg01\.h5: not a readable HDF5 file"):
        cache_features(frames, tmp_path / "features.h5", VideoConfig.from_dict(VIDEO), seed=0)
    assert_no_output(tmp_path / "features.h5")


def test_artifact_of_another_stage(tiny_demo, tmp_path):
    fmri = tmp_path / "sub-01.h5"
    preprocess(tiny_demo, tiny_demo / "sub-01", fmri)
    with pytest.raises(ArtifactError, match=r"sub-01\.h5: schema is 'llm4brain.fmri/1', expected"):
        cache_features(fmri, tmp_path / "features.h5", VideoConfig.from_dict(VIDEO), seed=0)
    assert_no_output(tmp_path / "features.h5")


def test_checkpoint_that_is_a_pickle(tmp_path):
    module = torch.nn.Linear(3, 2)
    weights = tmp_path / "projection.safetensors"
    torch.save(module.state_dict(), weights)  # a pickle under a safetensors name
    with pytest.raises(ArtifactError, match="projection.safetensors: not a safetensors file.*pickled checkpoints"):
        load_weights(module, weights)


def test_checkpoint_of_another_shape(tmp_path):
    from safetensors.torch import save_file

    save_file(torch.nn.Linear(4, 2).state_dict(), tmp_path / "projection.safetensors")
    with pytest.raises(ArtifactError, match="(?s)projection.safetensors: does not fit Linear.*size mismatch"):
        load_weights(torch.nn.Linear(3, 2), tmp_path / "projection.safetensors")


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory) -> Path:
    return make_copy(tmp_path_factory.mktemp("config"))


def dag_error(workdir: Path, edit: dict) -> str:
    """Build the DAG with one config edit; return the error text (the build must fail before any job)."""
    config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    for dotted, value in edit.items():
        *path, key = dotted.split(".")
        node = config
        for part in path:
            node = node.setdefault(part, {})
        node[key] = value
    (workdir / "bad.yaml").write_text(yaml.safe_dump(config))
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", "bad.yaml"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0 and not (workdir / "results").exists()
    return run.stdout + run.stderr


def test_ill_typed_config_value(workflow_copy):
    assert "'many' is not of type 'integer'" in dag_error(workflow_copy, {"align.train.steps": "many"})


def test_unsafe_subject_id(workflow_copy):
    out = dag_error(workflow_copy, {"data.subjects": ["sub-01", "../../etc"]})
    assert "'../../etc' does not match" in out


def test_config_combinations_refused_at_dag_build(workflow_copy):
    assert "the rate must give a whole number of frames per TR" in dag_error(workflow_copy, {"video.fps": 0.75})
    assert "captions.source: teacher needs video_llm.pretrained" in dag_error(
        workflow_copy, {"captions.source": "teacher"}
    )


def test_missing_vision_checkpoint(workflow_copy):
    out = dag_error(workflow_copy, {"video.model.weights": "/nonexistent/eva_vit_g.safetensors"})
    assert "Missing input files" in out and "/nonexistent/eva_vit_g.safetensors" in out


def test_stimulus_shorter_than_its_runs():
    from llm4brain.artifacts import check_coverage

    features = {"seg01": 5}  # TRs cached
    check_coverage(features, [("seg01", 0), ("seg01", 4)], "results/fmri/sub-01.h5")
    with pytest.raises(ArtifactError, match=r"sub-01\.h5: pairs segment 'seg01' up to TR 7, but its stimulus covers 5"):
        check_coverage(features, [("seg01", 7)], "results/fmri/sub-01.h5")


def test_duplicate_ids_refused_at_dag_build(workflow_copy):
    assert "config data.subjects lists ['sub-01'] more than once" in dag_error(
        workflow_copy, {"data.subjects": ["sub-01", "sub-02", "sub-01"]}
    )
    assert "config data.segments lists ['seg01'] more than once" in dag_error(
        workflow_copy, {"data.segments": {"train": ["seg01", "seg02", "seg01"], "test": ["test01"]}}
    )
    assert "config data.segments: ['seg01'] are both train and test" in dag_error(
        workflow_copy, {"data.segments": {"train": ["seg01", "seg02"], "test": ["seg01"]}}
    )


def test_collection_config_refused_at_dag_build(workflow_copy, tmp_path):
    rest = {"name": "rest", "root": str(tmp_path), "layout": "bids"}
    assert "names ['rest'] are used more than once" in dag_error(workflow_copy, {"scmbm.collections": [rest, rest]})
    assert "'hours' was unexpected" in dag_error(workflow_copy, {"scmbm.collections": [{**rest, "hours": 2}]})
    assert "'xnat' is not one of ['bids', 'fmriprep', 'hcp']" in dag_error(
        workflow_copy, {"scmbm.collections": [{**rest, "layout": "xnat"}]}
    )
    assert "collection rest: no volume runs under" in dag_error(workflow_copy, {"scmbm.collections": [rest]})
    assert "scmbm.collections are for pretrain_scmbm" in dag_error(
        workflow_copy, {"scmbm.collections": [rest], "scmbm.checkpoint": "mind-vis.safetensors"}
    )


def test_a_collection_holding_a_task_subjects_runs_is_refused(tmp_path):
    """The task's own runs, test segments among them, never enter a collection (and so never pretraining)."""
    workdir = make_copy(tmp_path / "workflow")
    func = workdir / "resources" / "demo" / "r3" / "sub-01" / "func"  # the micro config's replicate: seed 3
    func.mkdir(parents=True)
    (func / "sub-01_task-movie_run-1_bold.nii.gz").write_bytes(b"")  # discovery reads names, not images
    out = dag_error(workdir, {"scmbm.collections": [{"name": "own", "root": "resources/demo/r3", "layout": "bids"}]})
    assert re.search(
        r"own: resources/demo/r3/sub-01/func/sub-01_task-movie_run-1_bold\.nii\.gz is a run of task subject "
        r"sub-01",
        out,
    ), out[-2000:]
