"""Unlabelled collections for SC-MBM (``scmbm.collections``): discovery, preprocessing by the task subjects'
own cleaning, QC of bad runs, and the workflow from raw collections into ``pretrain_scmbm``.

The miniature collections: a BIDS dataset of NIfTI volumes (one run is nibabel's real ``functional.nii``,
one on another grid), a BIDS dataset of CIFTI dense time series (built with nibabel's cifti2 API) and an
HCP-style folder holding both kinds.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import FMRI_PARAMS, REPO, TINY_SEGMENTS
from nibabel import cifti2
from wen2018 import brain_models

from llm4brain.artifacts import open_artifact, read_keys
from llm4brain.fmri.collections import collection_qc, preprocess_collection_subject, shards_with_samples
from llm4brain.fmri.discover import discover
from llm4brain.fmri.preprocess import pair_run, preprocess_subject
from llm4brain.fmri.runs import InputError, RunLayout, find_runs
from llm4brain.sections import FmriConfig, ScmbmCollectionsConfig

FUNCTIONAL = Path(nib.__file__).parent / "tests" / "data" / "functional.nii"  # real EPI: 17 x 21 x 3, 20 TRs of 2 s
CLEANING = {
    **{k: FMRI_PARAMS[k] for k in ("detrend_order", "high_pass", "zscore", "mask_labels", "cifti_structures")},
    "trim": {"start": 0, "end": 0, "keep": None},
    "confounds": [],
}
LAYOUT = RunLayout(layout="demo")


def collection(name: str, root: Path, layout: str, **keys) -> ScmbmCollectionsConfig:
    """:func:`entry`, typed as ``discover`` takes it."""
    return ScmbmCollectionsConfig.from_dict(entry(name, root, layout, **keys))


def entry(name: str, root: Path, layout: str, **keys) -> dict:
    """A collection entry with the schema's defaults filled, as the workflow sees it."""
    filters = {"task": None, "space": None, "desc": None, "run": None, **keys.pop("filters", {})}
    return {
        "name": name,
        "root": str(root),
        "layout": layout,
        "subjects": "all",
        "filters": filters,
        "tr": 2.0,
        "trim": {"start": 0, "end": 0},
        "confounds": [],
        "on_bad_run": "error",
        **keys,
    }


def volume_run(
    path: Path, *, n: int = 24, shape=(10, 9, 7), voxel: float = 3.0, tr: float = 2.0, seed: int = 0
) -> Path:
    """A random 4-D run centred on the origin, TR in its header."""
    rng = np.random.default_rng(seed)
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = -voxel * (np.asarray(shape) - 1) / 2
    data = (100.0 + rng.normal(size=shape + (n,)).cumsum(-1) * 0.2 + rng.normal(size=shape + (n,))).astype(np.float32)
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = tr
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return path


def cifti_run(path: Path, *, n: int = 24, tr: float = 2.0, seed: int = 0) -> Path:
    """A dense time series over wen2018.brain_models() (40 cortical grayordinates + 8 thalamic voxels)."""
    models = brain_models()
    series = (100.0 + np.random.default_rng(seed).normal(size=(n, len(models)))).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    cifti2.Cifti2Image(series, header=(cifti2.SeriesAxis(0.0, tr, n, unit="SECOND"), models)).to_filename(path)
    return path


def bids_volumes(root: Path) -> Path:
    """sub-A: a rest run and a movie run; sub-B (with a session): a rest run on a 2x coarser grid and nibabel's
    real functional.nii. participants.tsv lists both."""
    volume_run(root / "sub-A/func/sub-A_task-rest_run-1_bold.nii.gz", seed=1)
    volume_run(root / "sub-A/func/sub-A_task-movie_run-1_bold.nii.gz", seed=2)
    volume_run(root / "sub-B/ses-1/func/sub-B_ses-1_task-rest_run-1_bold.nii.gz", shape=(5, 5, 4), voxel=6.0, seed=3)
    shutil.copy(FUNCTIONAL, root / "sub-B/ses-1/func/sub-B_ses-1_task-rest_run-2_bold.nii")
    pd.DataFrame({"participant_id": ["sub-A", "sub-B"], "age": [30, "n/a"]}).to_csv(
        root / "participants.tsv", sep="\t", index=False
    )
    return root


def bids_cifti(root: Path) -> Path:
    """fMRIPrep-style: each run as fsLR CIFTI and as an MNI volume (the task's kind picks one)."""
    for subject, seed in (("sub-C", 4), ("sub-D", 5)):
        cifti_run(root / f"{subject}/func/{subject}_task-rest_space-fsLR_den-91k_bold.dtseries.nii", seed=seed)
        volume_run(
            root / f"{subject}/func/{subject}_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz", seed=seed
        )
    return root


def hcp(root: Path) -> Path:
    """Two subjects' MNINonLinear/Results: CIFTI (_Atlas and _Atlas_MSMAll), the MNI volume and an SBRef."""
    for subject, runs in (("100307", ("rfMRI_REST1_LR", "tfMRI_MOTOR_LR")), ("100408", ("rfMRI_REST2_RL",))):
        for i, run in enumerate(runs):
            folder = root / subject / "MNINonLinear" / "Results" / run
            cifti_run(folder / f"{run}_Atlas.dtseries.nii", seed=10 + i)
            cifti_run(folder / f"{run}_Atlas_MSMAll.dtseries.nii", seed=20 + i)
            volume = folder / f"{run}.nii.gz"
            if subject == "100307" and run.startswith("rfMRI"):
                nib.save(nib.load(FUNCTIONAL), volume)  # the real EPI as an HCP run
            else:
                volume_run(volume, seed=30 + i)
            volume_run(folder / f"{run}_SBRef.nii.gz", n=1, seed=40 + i)
    return root


# ---- discovery ----------------------------------------------------------------------------------------


def test_discover_bids_volumes_by_entity_globs(tmp_path):
    root = bids_volumes(tmp_path / "rest")
    found = discover(collection("rest", root, "bids", filters={"task": "rest"}), "volume")
    assert {s: list(runs) for s, runs in found.items()} == {
        "sub-A": ["task-rest_run-1"],
        "sub-B": ["ses-1_task-rest_run-1", "ses-1_task-rest_run-2"],
    }
    assert found["sub-B"]["ses-1_task-rest_run-2"].name == "sub-B_ses-1_task-rest_run-2_bold.nii"
    only_two = discover(collection("rest", root, "bids", filters={"run": "[2]"}), "volume")
    assert {s: list(runs) for s, runs in only_two.items()} == {"sub-B": ["ses-1_task-rest_run-2"]}
    assert discover(collection("rest", root, "bids", subjects=["sub-A"]), "volume").keys() == {"sub-A"}
    with pytest.raises(InputError, match=r"collection rest: no volume runs of subject sub-A under .*rest/sub-A"):
        discover(
            collection("rest", root, "bids", subjects=["sub-A"], filters={"task": "sleep"}),
            "volume",
        )
    with pytest.raises(InputError, match=r"collection rest: no cifti runs under .*rest match"):
        discover(collection("rest", root, "bids"), "cifti")


def test_discover_fmriprep_takes_the_tasks_kind_and_refuses_ambiguous_runs(tmp_path):
    root = bids_cifti(tmp_path / "prep")
    cifti = discover(collection("prep", root, "fmriprep"), "cifti")
    assert {s: [p.name for p in runs.values()] for s, runs in cifti.items()} == {
        "sub-C": ["sub-C_task-rest_space-fsLR_den-91k_bold.dtseries.nii"],
        "sub-D": ["sub-D_task-rest_space-fsLR_den-91k_bold.dtseries.nii"],
    }
    assert list(cifti["sub-C"]) == ["task-rest"]
    volume_run(root / "sub-C/func/sub-C_task-rest_space-T1w_desc-preproc_bold.nii.gz")
    with pytest.raises(InputError, match=r"sub-C: run task-rest matches 2 files .*narrow the collection's space/desc"):
        discover(collection("prep", root, "fmriprep"), "volume")
    picked = discover(collection("prep", root, "fmriprep", filters={"space": "MNI*"}), "volume")
    assert "MNI152NLin2009cAsym" in picked["sub-C"]["task-rest"].name


def test_discover_hcp_folders(tmp_path):
    root = hcp(tmp_path / "hcp")
    rest = discover(collection("hcp", root, "hcp", filters={"task": "rfMRI_REST*"}), "cifti")
    assert {s: {r: p.name for r, p in runs.items()} for s, runs in rest.items()} == {
        "100307": {"rfMRI_REST1_LR": "rfMRI_REST1_LR_Atlas.dtseries.nii"},
        "100408": {"rfMRI_REST2_RL": "rfMRI_REST2_RL_Atlas.dtseries.nii"},
    }
    msmall = discover(collection("hcp", root, "hcp", filters={"desc": "_Atlas_MSMAll"}), "cifti")
    assert sorted(msmall["100307"]) == ["rfMRI_REST1_LR", "tfMRI_MOTOR_LR"]
    assert all(p.name.endswith("_Atlas_MSMAll.dtseries.nii") for runs in msmall.values() for p in runs.values())
    volumes = discover(collection("hcp", root, "hcp", filters={"run": "*_LR"}), "volume")
    assert {s: {r: p.name for r, p in runs.items()} for s, runs in volumes.items()} == {
        "100307": {"rfMRI_REST1_LR": "rfMRI_REST1_LR.nii.gz", "tfMRI_MOTOR_LR": "tfMRI_MOTOR_LR.nii.gz"}
    }


# ---- preprocessing ------------------------------------------------------------------------------------


def test_a_collection_run_is_cleaned_exactly_like_the_task_run(tiny_demo, tmp_path):
    """sub-01's seg02 run (shown once) through preprocess_collection_subject equals the task artifact's seg02
    samples at their paired volumes: one cleaning code path."""
    task = tmp_path / "task.h5"
    preprocess_subject(
        "sub-01",
        tiny_demo / "sub-01",
        tiny_demo / "roi_mask.nii.gz",
        task,
        TINY_SEGMENTS,
        2.0,
        FmriConfig.from_dict(FMRI_PARAMS),
    )
    run = next(
        r
        for r in find_runs(tiny_demo / "sub-01", RunLayout(), TINY_SEGMENTS["train"] + TINY_SEGMENTS["test"])
        if r.segment == "seg02"
    )
    out, qc = tmp_path / "c" / "sub-01.h5", tmp_path / "c" / "qc" / "sub-01.tsv"
    preprocess_collection_subject(
        collection="c",
        subject="sub-01",
        runs={"rest": run.bold},
        mask_path=tiny_demo / "roi_mask.nii.gz",
        out_path=out,
        qc_path=qc,
        tr=2.0,
        fmri=FmriConfig.from_dict(CLEANING),
        layout=LAYOUT,
    )
    n = nib.load(run.bold).shape[-1]
    with open_artifact(task, "fmri", ("train/bold",)) as f:
        keys = read_keys(f["train"])
        rows = [i for i, (segment, _) in enumerate(keys) if segment == "seg02"]
        expected = f["train/bold"][rows]
    with open_artifact(out, "fmri", ("train/bold", "train/segment", "train/tr", "mask")) as f:
        assert list(f) == ["train", "mask", "qc"]  # only the train split
        assert read_keys(f["train"]) == [("rest", v) for v in range(n)]
        assert f["mask"].shape == f["train/bold"].shape[1:] and f.attrs["n_runs"] == 1
        volumes = [v for _, v in pair_run(run, n, 2.0, FMRI_PARAMS["hrf_lag"])]
        assert np.array_equal(f["train/bold"][volumes], expected)
    table = pd.read_csv(qc, sep="\t")
    assert table[["run", "status", "volumes"]].values.tolist() == [["rest", "ok", n]]


def test_cifti_volumes_and_resampled_volumes(tmp_path, tiny_demo):
    prep, rest = bids_cifti(tmp_path / "prep"), bids_volumes(tmp_path / "rest")
    runs = discover(collection("prep", prep, "fmriprep"), "cifti")["sub-C"]
    out = tmp_path / "prep.h5"
    preprocess_collection_subject(
        collection="prep",
        subject="sub-C",
        runs=runs,
        mask_path=None,
        out_path=out,
        qc_path=tmp_path / "prep.tsv",
        tr=2.0,
        fmri=FmriConfig.from_dict(CLEANING),
        layout=LAYOUT,
    )
    with h5py.File(out) as f:
        bold = f["train/bold"][:]
        assert bold.shape == (24, 40) and f.attrs["layout"] == "vector"  # the cortical grayordinates only
    np.testing.assert_allclose(bold.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(bold.std(0, ddof=1), 1, rtol=1e-4)
    runs = discover(collection("rest", rest, "bids", filters={"task": "rest"}), "volume")["sub-B"]
    out = tmp_path / "rest.h5"
    mask = tiny_demo / "roi_mask.nii.gz"
    preprocess_collection_subject(
        collection="rest",
        subject="sub-B",
        runs=runs,
        mask_path=mask,
        out_path=out,
        qc_path=tmp_path / "rest.tsv",
        tr=2.0,
        fmri=FmriConfig.from_dict(CLEANING),
        layout=LAYOUT,
    )
    grid = nib.load(tiny_demo / "roi_mask.nii.gz").shape
    with h5py.File(out) as f:
        assert f["train/bold"].shape == (24 + 20, *grid)  # both runs resampled onto the task mask's grid
        assert [k[0] for k in read_keys(f["train"])] == ["ses-1_task-rest_run-1"] * 24 + ["ses-1_task-rest_run-2"] * 20
        assert 0 < f["mask"][:].sum() <= (np.asarray(nib.load(tiny_demo / "roi_mask.nii.gz").dataobj) > 0).sum()


def broken_collection(root: Path) -> dict[str, Path]:
    """One good run, one truncated file and one whose header says TR 3 s."""
    good = volume_run(root / "good.nii.gz", seed=1)
    cut = volume_run(root / "cut.nii.gz", seed=2)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    slow = volume_run(root / "slow.nii.gz", tr=3.0, seed=3)
    return {"run-1": good, "run-2": cut, "run-3": slow}


def test_on_bad_run_error_names_the_file(tiny_demo, tmp_path):
    runs = broken_collection(tmp_path / "raw")
    out = tmp_path / "c" / "sub-X.h5"
    with pytest.raises(InputError, match=r"cut\.nii\.gz: cannot read"):
        preprocess_collection_subject(
            collection="c",
            subject="sub-X",
            runs=runs,
            mask_path=tiny_demo / "roi_mask.nii.gz",
            out_path=out,
            qc_path=tmp_path / "c" / "qc.tsv",
            tr=2.0,
            fmri=FmriConfig.from_dict(CLEANING),
            layout=LAYOUT,
        )
    assert not out.exists() and not (tmp_path / "c" / "qc.tsv").exists()
    assert not list(out.parent.glob(".*tmp-*"))


def test_on_bad_run_skip_leaves_a_qc_row_per_run(tiny_demo, tmp_path):
    runs = broken_collection(tmp_path / "raw")
    out, qc = tmp_path / "c" / "sub-X.h5", tmp_path / "c" / "qc" / "sub-X.tsv"
    preprocess_collection_subject(
        collection="c",
        subject="sub-X",
        runs=runs,
        mask_path=tiny_demo / "roi_mask.nii.gz",
        out_path=out,
        qc_path=qc,
        tr=2.0,
        fmri=FmriConfig.from_dict(CLEANING),
        layout=LAYOUT,
        on_bad_run="skip",
    )
    with h5py.File(out) as f:
        assert {k[0] for k in read_keys(f["train"])} == {"run-1"} and len(f["train/bold"]) == 24
        assert f.attrs["n_runs"] == 1 and f.attrs["n_skipped"] == 2
    table = collection_qc("c", [qc], tmp_path / "c" / "qc.tsv")
    assert table["status"].tolist() == ["ok", "skipped", "skipped"]
    assert table["file"].tolist() == [str(p) for p in runs.values()]
    assert "cut.nii.gz: cannot read" in table["reason"][1]
    assert "slow.nii.gz: header TR is 3 s but the config says 2 s" in table["reason"][2]
    assert pd.read_csv(tmp_path / "c" / "qc.tsv", sep="\t").equals(pd.read_csv(qc, sep="\t"))


def test_a_collection_without_a_usable_run_is_an_error(tiny_demo, tmp_path):
    runs = broken_collection(tmp_path / "raw")
    del runs["run-1"]
    out, qc = tmp_path / "c" / "sub-X.h5", tmp_path / "c" / "qc" / "sub-X.tsv"
    preprocess_collection_subject(
        collection="c",
        subject="sub-X",
        runs=runs,
        mask_path=tiny_demo / "roi_mask.nii.gz",
        out_path=out,
        qc_path=qc,
        tr=2.0,
        fmri=FmriConfig.from_dict(CLEANING),
        layout=LAYOUT,
        on_bad_run="skip",
    )
    with h5py.File(out) as f:
        assert f["train/bold"].shape[0] == 0 and f.attrs["n_runs"] == 0  # an empty shard; the collection decides
    good = tmp_path / "good.h5"
    preprocess_collection_subject(
        collection="c",
        subject="sub-Y",
        runs={"run-1": tmp_path / "raw" / "good.nii.gz"},
        mask_path=tiny_demo / "roi_mask.nii.gz",
        out_path=good,
        qc_path=tmp_path / "good.tsv",
        tr=2.0,
        fmri=FmriConfig.from_dict(CLEANING),
        layout=LAYOUT,
    )
    assert shards_with_samples([out, good]) == [str(good)]  # what pretrain_scmbm is given
    with pytest.raises(InputError, match=r"collection c: no usable run among 2 \(.*cut\.nii\.gz: cannot read"):
        collection_qc("c", [qc], tmp_path / "c" / "qc.tsv")
    assert not (tmp_path / "c" / "qc.tsv").exists()


def test_hcp_scmbm_config_validates():
    """config/hcp-scmbm.yaml is a complete config (its FILL IN paths need not exist to validate)."""
    from llm4brain.config_schema import read_schema, validate_config

    text = (REPO / "config" / "hcp-scmbm.yaml").read_text()
    config = yaml.safe_load(text)
    validate_config(config, read_schema(REPO / "config" / "schema.yaml"))
    encoder, scmbm = config["encoder"], config["scmbm"]
    assert (encoder["dim"], encoder["depth"], encoder["num_heads"], encoder["mlp_ratio"]) == (1024, 24, 16, 1.0)
    assert scmbm["decoder"]["dim"] == 512 and scmbm["mask_ratio"] == 0.75 and scmbm["pretrain"]
    [collection] = scmbm["collections"]
    assert collection["layout"] == "hcp" and collection["tr"] == 0.72 and collection["filters"]["task"] == "rfMRI_REST*"
    assert "FILL IN" in next(line for line in text.splitlines() if f"root: {collection['root']}" in line)


# ---- the workflow ---------------------------------------------------------------------------------------


def run_to_scmbm(workdir: Path, config: dict, scmbm: str) -> None:
    (workdir / "collections.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", scmbm, "--configfile", "collections.yaml"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]


@pytest.mark.workflow
def test_collections_run_through_the_workflow_into_pretrain_scmbm(tmp_path):
    """Volumes: the micro demo with a BIDS collection (functional.nii among its runs) and an HCP folder's MNI
    volumes. Grayordinates: the miniature Wen 2018 release with a CIFTI BIDS collection and the HCP folder's
    dense time series. Both run from raw files to pretrain_scmbm; a skipped run is in the QC table."""
    from test_workflow import wen_config
    from workflow_copy import RUN, make_copy

    micro = yaml.safe_load((REPO / ".test" / "micro.yaml").read_text())
    data = tmp_path / "collections"
    rest, prep, folder = bids_volumes(data / "rest"), bids_cifti(data / "prep"), hcp(data / "hcp")
    (rest / "sub-A" / "func" / "sub-A_task-rest_run-2_bold.nii.gz").write_bytes(b"not an image")
    volume_run(rest / "sub-E" / "func" / "sub-E_task-rest_run-1_bold.nii.gz", tr=2.5)  # sub-E: nothing usable
    pd.DataFrame({"participant_id": ["sub-A", "sub-B", "sub-E"]}).to_csv(
        rest / "participants.tsv", sep="\t", index=False
    )
    volumes = make_copy(tmp_path / "volumes")
    config = {
        **micro,
        "scmbm": {
            **micro["scmbm"],
            "collections": [
                entry("rest", rest, "bids", filters={"task": "rest"}, on_bad_run="skip"),
                entry("hcp", folder, "hcp", filters={"task": "rfMRI_*"}, tr=None),
            ],
        },
    }
    run_to_scmbm(volumes, config, f"{RUN}/scmbm")  # the demo: its data, collections included, per replicate
    qc = pd.read_csv(volumes / f"{RUN}/collections/rest/qc.tsv", sep="\t")
    assert sorted(zip(qc["subject"], qc["run"], qc["status"], strict=True)) == [
        ("sub-A", "task-rest_run-1", "ok"),
        ("sub-A", "task-rest_run-2", "skipped"),
        ("sub-B", "ses-1_task-rest_run-1", "ok"),
        ("sub-B", "ses-1_task-rest_run-2", "ok"),
        ("sub-E", "task-rest_run-1", "skipped"),
    ]
    skipped = qc[qc["status"] == "skipped"]
    assert all(f"{file}: " in reason for file, reason in zip(skipped["file"], skipped["reason"], strict=True))
    assert "header TR is 2.5 s" in skipped["reason"].iloc[-1]
    with (
        h5py.File(volumes / f"{RUN}/collections/hcp/100307.h5") as f,
        h5py.File(volumes / f"{RUN}/fmri/sub-01.h5") as task,
    ):
        assert f["train/bold"].shape == (20,) + task["train/bold"].shape[1:]  # functional.nii on the task's grid
    assert (volumes / f"{RUN}/scmbm/encoder.safetensors").exists()

    grayordinates = make_copy(tmp_path / "grayordinates")
    config = wen_config("wen2018.yaml", grayordinates, tmp_path)
    config["video"]["model"]["weights"] = None
    config["scmbm"] = {
        **config["scmbm"],
        "collections": [entry("prep", prep, "fmriprep"), entry("hcp", folder, "hcp", filters={"task": "rfMRI_*"})],
    }
    run_to_scmbm(grayordinates, config, "results/r0/scmbm")  # real data: collections shared, SC-MBM seed 0's
    for name in ("prep/sub-C", "prep/sub-D", "hcp/100307", "hcp/100408"):
        with h5py.File(grayordinates / f"results/collections/{name}.h5") as f:
            assert f["train/bold"].shape == (24, 40) and f.attrs["layout"] == "vector", name
    assert (grayordinates / "results/r0/scmbm/encoder.safetensors").exists()
