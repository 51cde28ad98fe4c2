"""The workflow across subjects (.test/cross_subject.yaml on top of the micro config): a shared response model
carries the held-out subject, every subject through the shared space, and the disjoint setting. Its own file,
so that pytest-xdist runs it beside the micro workflow tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_copy import RAW, REPO, RUN, make_copy, planned_rules, snakemake

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def cross_subject(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the workflow with .test/cross_subject.yaml next to the micro config."""
    workdir = make_copy(tmp_path_factory.mktemp("cross_subject"))
    shutil.copy(REPO / ".test" / "cross_subject.yaml", workdir / "config" / "cross_subject.yaml")
    return workdir


CROSS_SUBJECT = ("--configfile", "config/config.yaml", "config/cross_subject.yaml")


def test_shared_response_model_carries_the_heldout_subject_through_the_workflow(cross_subject):
    """functional_alignment srm: the SRM is fitted on every subject's training responses and the aligner
    trains on and encodes sub-03's carried fMRI, in the labelled subjects' voxel space."""
    snakemake(cross_subject, *CROSS_SUBJECT, "--", f"{RUN}/align/metrics.tsv")
    with h5py.File(cross_subject / RUN / "fmri/aligned/srm.h5") as srm:
        assert srm.attrs["split"] == "train" and set(srm) == {"sub-01", "sub-02", "sub-03"}
        assert srm["sub-03/w"].shape[1] == 4
    masks = {}
    for subject in ("sub-01", "sub-02", "sub-03"):
        with h5py.File(cross_subject / RUN / f"fmri/{subject}.h5") as f:
            masks[subject] = f["mask"][:].astype(bool)
    with h5py.File(cross_subject / RUN / "fmri/aligned/sub-03.h5") as aligned:
        # the group reference: the union of the labelled subjects' masks (each covers its own part of the ROI)
        assert np.array_equal(aligned["mask"][:].astype(bool), masks["sub-01"] | masks["sub-02"])
        assert not np.array_equal(masks["sub-03"], masks["sub-01"] | masks["sub-02"])
        assert aligned.attrs["functional_alignment"] == "srm"
    dry = snakemake(
        cross_subject, *CROSS_SUBJECT, "--dry-run", "--forcerun", "pretrain_adaptor", "--", f"{RUN}/align/metrics.tsv"
    )
    inputs = dry.split("rule pretrain_adaptor:")[1].split("input:")[1].split("\n")[0]
    assert f"{RUN}/fmri/aligned/sub-03.h5" in inputs and f"{RUN}/fmri/sub-03.h5" not in inputs
    metrics = pd.read_csv(cross_subject / RUN / "align/metrics.tsv", sep="\t")
    assert set(metrics["subject"]) == {"sub-01", "sub-02", "sub-03"}


def test_carrying_every_subject_reads_the_labelled_ones_through_the_shared_space_too(cross_subject):
    """functional_alignment carry all (the symmetric comparison): a labelled subject is carried into the same
    group space as the held-out one, z-scored on its training split, and the aligner, the student and the
    nearest-train pool read every subject's carried fMRI."""
    carry = ("--config", "align={functional_alignment: {carry: all}}")
    snakemake(cross_subject, *CROSS_SUBJECT, *carry, "--", f"{RUN}/fmri/aligned/sub-01.h5")
    aligned = cross_subject / RUN / "fmri/aligned"
    with h5py.File(aligned / "sub-01.h5") as labelled, h5py.File(aligned / "sub-03.h5") as held:
        mask = labelled["mask"][:].astype(bool)
        assert np.array_equal(mask, held["mask"][:].astype(bool))
        train = labelled["train/bold"][:][:, mask]
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(train.std(0), 1, atol=1e-3)
    rules = ("pretrain_adaptor", "instruct_llm", "nearest_train_pool")
    dry = snakemake(
        cross_subject, *CROSS_SUBJECT, *carry, "--dry-run", "--forcerun", *rules, "--", f"{RUN}/eval/sub-01.h5"
    )
    for rule in rules:
        inputs = dry.split(f"rule {rule}:")[1].split("input:")[1].split("\n")[0]
        assert f"{RUN}/fmri/aligned/sub-01.h5" in inputs and f"{RUN}/fmri/aligned/sub-02.h5" in inputs, rule
        assert f"{RUN}/fmri/sub-01.h5" not in inputs, rule


def test_a_heldout_subject_shown_other_training_clips_has_its_own_data_and_no_srm(cross_subject):
    """data.segments.subject_train: sub-03 watched its own training segments. The simulator shows it those,
    its preprocessed training split holds them alone, the video LLM learns from every training segment, and a
    shared response model (which needs shared training clips) is refused at DAG build, naming the key, while
    connectivity SRM (which does not) is fitted and carries sub-03."""
    disjoint = cross_subject / "config" / "disjoint.yaml"
    disjoint.write_text(
        yaml.safe_dump(
            {
                "data": {
                    "segments": {
                        "train": ["seg01", "seg02"],
                        "test": ["test01"],
                        "subject_train": {"sub-03": ["own01", "own02"]},
                    }
                }
            }
        )
    )
    args = (*CROSS_SUBJECT, "config/disjoint.yaml")
    with pytest.raises(AssertionError, match="sub-03 watched no training segment the labelled subjects watched"):
        planned_rules(cross_subject, *args)
    none = ("--config", "align={'functional_alignment': {'method': 'none'}}")
    with pytest.raises(AssertionError, match="the labelled subjects share no training segment"):
        planned_rules(
            cross_subject, *args, "--config", "align={'heldout': [], 'functional_alignment': {'method': 'none'}}"
        )
    fmri = [f"{RUN}/fmri/{s}.h5" for s in ("sub-01", "sub-03")]
    snakemake(cross_subject, *args, *none, "--", *fmri, f"{RAW}/stimuli/own01.mp4")
    for subject, expected in (("sub-01", {"seg01", "seg02"}), ("sub-03", {"own01", "own02"})):
        with h5py.File(cross_subject / RUN / f"fmri/{subject}.h5") as f:
            assert set(f["train/segment"].asstr()[:]) == expected, subject
            assert set(f["test/segment"].asstr()[:]) == {"test01"}, subject
        events = sorted((cross_subject / RAW / subject / "func").glob("*_events.tsv"))
        watched = {pd.read_csv(path, sep="\t")["segment"][0] for path in events}
        assert watched == expected | {"test01"}, subject
    assert (cross_subject / RAW / "stimuli/own01.mp4").exists()
    # connectivity SRM needs no shared clip: the same design builds, and the rules fit it and carry sub-03
    connectivity = ("--config", "align={'functional_alignment': {'method': 'connectivity-srm', 'features': 4}}")
    snakemake(cross_subject, *args, *connectivity, "--", f"{RUN}/fmri/aligned/sub-03.h5")
    with h5py.File(cross_subject / RUN / "fmri/aligned/srm.h5") as srm:
        assert srm.attrs["method"] == "connectivity-srm" and srm.attrs["targets"] > 4 and "n_clips" not in srm.attrs
    with h5py.File(cross_subject / RUN / "fmri/aligned/sub-03.h5") as f:
        assert f.attrs["functional_alignment"] == "connectivity-srm" and f["test/bold"].shape[0] > 0
    dry = snakemake(cross_subject, *args, *none, "--dry-run", "--printshellcmds", "--", f"{RUN}/video_llm")
    assert "train_video_llm" in dry
