"""fMRI preprocessing: signal functions, pairing, the per-subject artifact and bad-input errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import FMRI_PARAMS, REPO, TINY_DEMO, TINY_SEGMENTS

from llm4brain.artifacts import open_artifact, read_keys
from llm4brain.fmri.preprocess import SplitHalf, clean_run, pair_run, preprocess_subject
from llm4brain.fmri.runs import InputError, Run, RunLayout, check_id
from llm4brain.fmri.signal import cosine_drift, nuisance_basis, residualize, standardize
from llm4brain.sections import FmriConfig

FMRI = FmriConfig.from_dict(FMRI_PARAMS)  # the fmri section's defaults, typed


@pytest.mark.parametrize("order", [0, 1, 2, 4])
def test_polynomial_detrend_matches_numpy_polynomial(order):
    """The residual equals data minus numpy.polynomial's least-squares fit of the same order, per voxel."""
    rng = np.random.default_rng(order)
    t = np.arange(120.0)
    data = (
        rng.normal(size=(120, 5)) + np.outer(t, rng.normal(size=5)) * 0.05 + np.outer((t / 60) ** 3, rng.normal(size=5))
    )
    out = data.astype(np.float32)
    clean_run(out, FmriConfig.from_dict({**FMRI_PARAMS, "detrend_order": order, "zscore": False}), 2.0)
    for v in range(5):
        fit = np.polynomial.Polynomial.fit(t, data[:, v], order)
        np.testing.assert_allclose(out[:, v], data[:, v] - fit(t), atol=2e-5)


@pytest.mark.parametrize("order", [1, 2, 4])
def test_polynomial_detrend_on_real_epi(order):
    """The same on real EPI (nibabel's functional.nii, 12 volumes of in-brain voxels)."""
    img = nib.load(Path(nib.__file__).parent / "tests" / "data" / "functional.nii")
    data = np.asarray(img.dataobj, dtype=np.float64)
    data = data[data.mean(-1) > 0].T  # (T, V)
    t = np.arange(len(data), dtype=float)
    out = data.astype(np.float32)
    clean_run(out, FmriConfig.from_dict({**FMRI_PARAMS, "detrend_order": order, "zscore": False}), 2.0)
    fitted = np.stack([np.polynomial.Polynomial.fit(t, data[:, v], order)(t) for v in range(data.shape[1])], 1)
    np.testing.assert_allclose(out, data - fitted, atol=1e-5 * np.abs(data).max())


def test_zscore_flags_constant_voxels():
    data = np.random.default_rng(0).normal(size=(30, 3))
    data[:, 1] = 7.0
    ok = standardize(data)
    assert ok.tolist() == [True, False, True]
    np.testing.assert_allclose(data[:, [0, 2]].std(0, ddof=1), 1, rtol=1e-5)
    assert (data[:, 1] == 0).all()


def test_split_half_reliability_streams_pearson():
    """Accumulated block by block, r equals numpy's correlation of the odd- and even-repeat means."""
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(20, 1))
    odd = np.concatenate([signal, rng.normal(size=(20, 1))], axis=1) + 0.05 * rng.normal(size=(20, 2))
    even = np.concatenate([signal, rng.normal(size=(20, 1))], axis=1) + 0.05 * rng.normal(size=(20, 2))
    half = SplitHalf(2)
    for block in (slice(0, 7), slice(7, 20)):
        half.add(odd[block], even[block])
    r = half.r()
    np.testing.assert_allclose(r, [np.corrcoef(odd[:, v], even[:, v])[0, 1] for v in range(2)], atol=1e-10)
    assert r[0] > 0.95 and abs(r[1]) < 0.6  # voxel 0 repeats its response, voxel 1 is noise


def test_pairing_applies_lag():
    run = Run(Path("x_bold.nii.gz"), Path("x_events.tsv"), "seg01", onset=4.0, duration=10.0)
    assert pair_run(run, 20, 2.0, 4.0) == [(0, 4), (1, 5), (2, 6), (3, 7), (4, 8)]
    with pytest.raises(InputError, match="x_bold.nii.gz"):
        pair_run(run, 8, 2.0, 4.0)


def test_preprocess_subject(tiny_demo, tmp_path):
    out = tmp_path / "sub-01.h5"
    preprocess_subject("sub-01", tiny_demo / "sub-01", tiny_demo / "roi_mask.nii.gz", out, TINY_SEGMENTS, 2.0, FMRI)
    with open_artifact(out, "fmri", ("train/bold", "test/bold", "mask")) as f:
        n = TINY_DEMO["trs_per_segment"]
        assert f["train/bold"].shape == (3 * n,) + tuple(TINY_DEMO["grid"])  # seg01 twice, seg02 once
        assert f["test/bold"].shape[0] == n  # repeats averaged
        keys = read_keys(f["test"])
        assert keys == [("test01", k) for k in range(n)]
        mask = f["mask"][:].astype(bool)
        assert np.all(f["train/bold"][:][:, ~mask] == 0)
        assert f.attrs["tr"] == 2.0 and f.attrs["schema"] == "llm4brain.fmri/1"
        n_voxels = int(mask.sum())
        assert f["qc/tsnr"].shape == (n_voxels,) and (f["qc/tsnr"][:] > 0).all()
        assert f["qc/reliability"].shape == (n_voxels,) and np.nanmax(np.abs(f["qc/reliability"][:])) <= 1


def _copy_subject(tiny_demo: Path, tmp_path: Path) -> Path:
    target = tmp_path / "sub-01"
    shutil.copytree(tiny_demo / "sub-01", target)
    return target


def test_wrong_tr_names_file(tiny_demo, tmp_path):
    out = tmp_path / "out.h5"
    with pytest.raises(InputError, match=r"_bold\.nii\.gz: header TR is 2 s but the config says 1\.5 s"):
        preprocess_subject("sub-01", tiny_demo / "sub-01", tiny_demo / "roi_mask.nii.gz", out, TINY_SEGMENTS, 1.5, FMRI)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_three_d_image_rejected(tiny_demo, tmp_path):
    subject = _copy_subject(tiny_demo, tmp_path)
    bold = sorted((subject / "func").glob("*_bold.nii.gz"))[0]
    img = nib.load(bold)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine), bold)
    with pytest.raises(InputError, match="expected a 4-D image"):
        preprocess_subject(
            "sub-01", subject, tiny_demo / "roi_mask.nii.gz", tmp_path / "o.h5", TINY_SEGMENTS, 2.0, FMRI
        )
    assert not (tmp_path / "o.h5").exists()


def test_truncated_gzip_rejected(tiny_demo, tmp_path):
    subject = _copy_subject(tiny_demo, tmp_path)
    bold = sorted((subject / "func").glob("*_bold.nii.gz"))[0]
    bold.write_bytes(bold.read_bytes()[:200])
    with pytest.raises(InputError, match="cannot read image"):
        preprocess_subject(
            "sub-01", subject, tiny_demo / "roi_mask.nii.gz", tmp_path / "o.h5", TINY_SEGMENTS, 2.0, FMRI
        )


def test_missing_segment_runs(tiny_demo, tmp_path):
    segments = {"train": ["seg01", "seg02", "seg99"], "test": ["test01"]}
    with pytest.raises(InputError, match="no runs for segments"):
        preprocess_subject(
            "sub-01", tiny_demo / "sub-01", tiny_demo / "roi_mask.nii.gz", tmp_path / "o.h5", segments, 2.0, FMRI
        )


def test_mask_grid_mismatch(tiny_demo, tmp_path):
    mask = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), np.eye(4)), mask)
    with pytest.raises(InputError, match="grid .* differs from the mask"):
        preprocess_subject("sub-01", tiny_demo / "sub-01", mask, tmp_path / "o.h5", TINY_SEGMENTS, 2.0, FMRI)


def test_unsafe_subject_id():
    with pytest.raises(InputError, match="may only contain"):
        check_id("../sub-01", "subject id")


def test_real_scanner_data(tmp_path):
    """nibabel's real 4-D EPI wrapped as a one-run BIDS subject goes through the same code."""
    src = Path(nib.__file__).parent / "tests" / "data" / "functional.nii"
    img = nib.load(src)
    tr = float(img.header.get_zooms()[3]) * (1e-3 if img.header.get_xyzt_units()[1] == "msec" else 1.0)
    func = tmp_path / "sub-01" / "func"
    func.mkdir(parents=True)
    shutil.copy(src, func / "sub-01_task-movie_run-01_bold.nii")
    n = img.shape[3]
    duration = (n - 1) * tr - 0.0
    pd.DataFrame({"onset": [0.0], "duration": [duration], "segment": ["clip"]}).to_csv(
        func / "sub-01_task-movie_run-01_events.tsv", sep="\t", index=False
    )
    mask = tmp_path / "mask.nii.gz"
    brain = np.asarray(img.dataobj).mean(-1) > 0
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), img.affine), mask)
    out = tmp_path / "real.h5"
    params = {**FMRI_PARAMS, "hrf_lag": 0.0, "detrend_order": 1}
    preprocess_subject(
        "sub-01", tmp_path / "sub-01", mask, out, {"train": ["clip"], "test": []}, tr, FmriConfig.from_dict(params)
    )
    with open_artifact(out, "fmri", ("train/bold",)) as f:
        bold = f["train/bold"][:]
        kept = f["mask"][:].astype(bool)
        assert f["test/bold"].shape == (0,) + img.shape[:3]
    assert bold.shape[0] == n - 1 and bold.shape[1:] == img.shape[:3]
    assert 0 < kept.sum() <= brain.sum()
    series = bold[:, kept].astype(np.float64)
    # z-scored over the whole run (mean 0, sample std 1), of which the first n - 1 volumes are paired (lag 0):
    # the unpaired last volume is minus their sum, and all n squares sum to n - 1
    last = -series.sum(0)
    np.testing.assert_allclose((series**2).sum(0) + last**2, n - 1, rtol=1e-4)
    assert np.abs(last).max() < n  # a z-score, not raw signal


def test_cosine_drift_removes_slow_signals_only():
    n, tr = 200, 2.0
    t = np.arange(n) * tr
    slow, fast = np.sin(2 * np.pi * 0.002 * t), np.sin(2 * np.pi * 0.1 * t)
    out = np.stack([slow, fast], axis=1)
    residualize(out, nuisance_basis(n, 0, cosine_drift(n, tr, 0.01)))
    assert out[:, 0].std() < 0.1 * slow.std()
    assert np.corrcoef(out[:, 1], fast)[0, 1] > 0.99
    assert cosine_drift(n, tr, 0.01).shape == (n, 8)  # frequencies below 0.01 Hz in 400 s


def derivatives_dataset(tiny_demo: Path, root: Path, nuisance: float) -> tuple[Path, Path]:
    """sub-01 of the demo as fMRIPrep derivatives (two spaces, confounds tables) + a raw dataset for events.

    Each T1w run gets ``nuisance`` × its ``csf`` confound added in every voxel."""
    deriv, raw = root / "derivatives" / "sub-01" / "ses-01" / "func", root / "raw" / "sub-01" / "ses-01" / "func"
    deriv.mkdir(parents=True)
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for bold in sorted((tiny_demo / "sub-01" / "func").glob("*_bold.nii.gz")):
        stem = bold.name.replace("sub-01_", "sub-01_ses-01_").replace("_bold.nii.gz", "")
        img = nib.load(bold)
        data = np.asarray(img.dataobj, dtype=np.float32)
        csf = rng.standard_normal(data.shape[-1]).cumsum()
        pd.DataFrame({"csf": np.r_[np.nan, csf[1:]], "trans_x": rng.standard_normal(data.shape[-1])}).to_csv(
            deriv / f"{stem}_desc-confounds_timeseries.tsv", sep="\t", index=False, na_rep="n/a"
        )
        data += nuisance * np.r_[0.0, csf[1:]].astype(np.float32)
        nib.save(nib.Nifti1Image(data, img.affine, img.header), deriv / f"{stem}_space-T1w_desc-preproc_bold.nii.gz")
        (deriv / f"{stem}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz").write_bytes(b"not selected")
        shutil.copy(str(bold).replace("_bold.nii.gz", "_events.tsv"), raw / f"{stem}_events.tsv")
    return root / "derivatives" / "sub-01", root / "raw"


BIDS = {"task": "movie", "space": "T1w", "desc": "preproc"}


def test_bids_derivatives_with_confound_regression(tiny_demo, tmp_path):
    subject, raw = derivatives_dataset(tiny_demo, tmp_path, nuisance=30.0)
    clean = tmp_path / "clean.h5"
    preprocess_subject("sub-01", tiny_demo / "sub-01", tiny_demo / "roi_mask.nii.gz", clean, TINY_SEGMENTS, 2.0, FMRI)
    outputs = {}
    for columns in ([], ["csf"]):
        out = tmp_path / f"confounds-{len(columns)}.h5"
        preprocess_subject(
            "sub-01",
            subject,
            tiny_demo / "roi_mask.nii.gz",
            out,
            TINY_SEGMENTS,
            2.0,
            FmriConfig.from_dict({**FMRI_PARAMS, "confounds": columns}),
            RunLayout.from_data({"layout": "bids", "bids": {**BIDS, "events_root": str(raw)}}),
        )
        outputs[len(columns)] = out
    with h5py.File(clean) as c, h5py.File(outputs[0]) as dirty, h5py.File(outputs[1]) as regressed:
        assert dirty.attrs["n_runs"] == c.attrs["n_runs"]  # the MNI decoys were never read
        reference = c["train/bold"][:].ravel()
        r_dirty = np.corrcoef(reference, dirty["train/bold"][:].ravel())[0, 1]
        r_regressed = np.corrcoef(reference, regressed["train/bold"][:].ravel())[0, 1]
    assert r_regressed > 0.9 and r_dirty < 0.5, (r_regressed, r_dirty)


def test_missing_confound_column_names_file(tiny_demo, tmp_path):
    subject, raw = derivatives_dataset(tiny_demo, tmp_path, nuisance=0.0)
    with pytest.raises(InputError, match=r"desc-confounds_timeseries\.tsv: missing columns \['rot_x'\]"):
        preprocess_subject(
            "sub-01",
            subject,
            tiny_demo / "roi_mask.nii.gz",
            tmp_path / "o.h5",
            TINY_SEGMENTS,
            2.0,
            FmriConfig.from_dict({**FMRI_PARAMS, "confounds": ["rot_x"]}),
            RunLayout.from_data({"layout": "bids", "bids": {**BIDS, "events_root": str(raw)}}),
        )
    assert not (tmp_path / "o.h5").exists()


def test_reliability_selection_keeps_repeatable_voxels(tiny_demo, tmp_path):
    out = tmp_path / "selected.h5"
    params = {**FMRI_PARAMS, "reliability": {"select": True, "split": "test", "threshold": 0.3}}
    preprocess_subject(
        "sub-01",
        tiny_demo / "sub-01",
        tiny_demo / "roi_mask.nii.gz",
        out,
        TINY_SEGMENTS,
        2.0,
        FmriConfig.from_dict(params),
    )
    with h5py.File(out) as f:
        roi = nib.load(tiny_demo / "roi_mask.nii.gz").get_fdata() > 0
        kept, reliability = f["mask"][:].astype(bool), f["qc/reliability"][:]
        assert 0 < kept.sum() < roi.sum()
        assert np.all(np.arctanh(reliability[kept[roi]]) >= 0.3)
        assert np.all(f["test/bold"][:][:, ~kept] == 0)


def replace_test_runs_by_noise(subject_dir: Path, roi: np.ndarray) -> int:
    """Overwrite every test run of ``subject_dir`` with noise, one ROI voxel constant in it; return how many."""
    replaced = 0
    for events in sorted(subject_dir.glob("func/*_events.tsv")):
        if "test01" not in events.read_text():
            continue
        bold = events.with_name(events.name.replace("_events.tsv", "_bold.nii.gz"))
        image = nib.load(bold)
        noise = np.random.default_rng(replaced).normal(100, 5, image.shape).astype(np.float32)
        noise[tuple(np.argwhere(roi)[0])] = 100.0  # constant in this test run only
        nib.save(nib.Nifti1Image(noise, image.affine, image.header), bold)
        replaced += 1
    return replaced


@pytest.mark.parametrize("split", ["train", "test"])
def test_test_runs_choose_no_voxels_unless_test_reliability_is_asked_for(tiny_demo, tmp_path, split):
    """Test runs replaced by noise (one voxel constant in them): with reliability selection on the training
    repeats, the kept voxels, their reliability and every training sample are unchanged; selecting on the
    test repeats (opt-in) changes which voxels are kept, and the artifact says test data chose them."""
    roi = nib.load(tiny_demo / "roi_mask.nii.gz").get_fdata() > 0
    params = {**FMRI_PARAMS, "reliability": {"select": True, "split": split, "threshold": 0.1}}
    noisy = _copy_subject(tiny_demo, tmp_path)
    assert replace_test_runs_by_noise(noisy, roi) == 2
    for name, subject_dir in (("real.h5", tiny_demo / "sub-01"), ("noisy.h5", noisy)):
        preprocess_subject(
            "sub-01",
            subject_dir,
            tiny_demo / "roi_mask.nii.gz",
            tmp_path / name,
            TINY_SEGMENTS,
            2.0,
            FmriConfig.from_dict(params),
        )
    with h5py.File(tmp_path / "real.h5") as real, h5py.File(tmp_path / "noisy.h5") as noisy_file:
        same_mask = np.array_equal(real["mask"][:], noisy_file["mask"][:])
        assert noisy_file.attrs["voxel_selection"] == f"{split}-reliability"
        if split == "test":
            assert not same_mask
            return
        assert same_mask and 0 < real["mask"][:].sum() < roi.sum()
        for name in ("train/bold", "qc/reliability", "qc/usable"):
            np.testing.assert_array_equal(real[name][:], noisy_file[name][:], err_msg=name)


SHIPPED = sorted([*(REPO / "config").glob("*.yaml"), REPO / ".test" / "micro.yaml"])


@pytest.mark.parametrize("path", [p for p in SHIPPED if p.name != "schema.yaml"], ids=lambda p: p.name)
def test_no_shipped_config_lets_test_data_choose_voxels(path):
    """Every shipped config, with the schema's defaults filled in, computes reliability on training data."""
    import yaml

    from llm4brain.config_schema import read_schema, validate_config

    config = yaml.safe_load(path.read_text())
    validate_config(config, read_schema(REPO / "config" / "schema.yaml"))
    assert config["fmri"]["reliability"]["split"] == "train", f"{path}: test data would choose the voxels"


WEN_SEGMENTS = {"train": ["seg1", "seg2"], "test": ["test1"]}
WEN_PARAMS = {**FMRI_PARAMS, "detrend_order": 4, "trim": {"start": 0, "end": 4, "keep": 20}, "unpaired_clips": "drop"}
WEN = FmriConfig.from_dict(WEN_PARAMS)
WEN_CIFTI = RunLayout(layout="wen2018")  # images: cifti, the default


def expected_clip(run: Path, lead: int, keep: int, order: int, volume: int, columns: np.ndarray) -> np.ndarray:
    """One cleaned volume computed independently: numpy.polynomial detrend + sample z-score of the kept volumes."""
    series = np.asarray(nib.load(run).dataobj, dtype=np.float64)[lead : lead + keep][:, columns]
    t = np.arange(keep)
    resid = np.stack(
        [series[:, v] - np.polynomial.Polynomial.fit(t, series[:, v], order)(t) for v in range(series.shape[1])], 1
    )
    return ((resid - resid.mean(0)) / resid.std(0, ddof=1))[volume]


def test_wen2018_cifti_layout(tmp_path):
    """The release layout: CIFTI cortex grayordinates, trimmed like the official code, lagged, repeats of
    the test segment averaged; the NaN volumes the trim removes never reach the output."""
    from wen2018 import write_wen2018

    write_wen2018(tmp_path, ["subject1"], WEN_SEGMENTS, keep=20)
    out = tmp_path / "subject1.h5"
    preprocess_subject("subject1", tmp_path / "subject1", None, out, WEN_SEGMENTS, 2.0, WEN, WEN_CIFTI)
    with open_artifact(out, "fmri", ("train/bold", "test/bold", "mask")) as f:
        assert f.attrs["layout"] == "vector" and f.attrs["n_runs"] == 2 + 2 + 3
        assert f["train/bold"].shape == (2 * 2 * 18, 40)  # 20 kept volumes, the last 2 clips lack a lagged volume
        assert f["test/bold"].shape == (18, 40) and f["mask"][:].all()
        train_keys, test_keys = read_keys(f["train"]), read_keys(f["test"])
        test = f["test/bold"][:]
        train = f["train/bold"][:]
    assert test_keys == [("test1", k) for k in range(18)]
    assert train_keys[:18] == [("seg1", k) for k in range(18)] and train_keys[18:36] == train_keys[:18]
    columns = np.arange(40)  # the cortical grayordinates come first in the fixture's brain-model axis
    runs = sorted((tmp_path / "subject1/fmri/test1/cifti").glob("*.dtseries.nii"))
    for k in (0, 9, 17):
        expected = np.mean([expected_clip(run, 1 + (r % 2), 20, 4, k + 2, columns) for r, run in enumerate(runs, 1)], 0)
        np.testing.assert_allclose(test[k], expected, atol=1e-4)
    second_run = sorted((tmp_path / "subject1/fmri/seg1/cifti").glob("*.dtseries.nii"))[1]
    np.testing.assert_allclose(train[18 + 5], expected_clip(second_run, 1, 20, 4, 7, columns), atol=1e-4)


def test_wen2018_trimming_and_pairing_errors(tmp_path):
    from wen2018 import write_wen2018

    write_wen2018(tmp_path, ["subject1"], WEN_SEGMENTS, keep=20)
    subject = tmp_path / "subject1"
    with pytest.raises(InputError, match=r"seg1_1_Atlas\.dtseries\.nii: run has 26 volumes, too few to trim"):
        preprocess_subject(
            "subject1",
            subject,
            None,
            tmp_path / "o.h5",
            WEN_SEGMENTS,
            2.0,
            FmriConfig.from_dict({**WEN_PARAMS, "trim": {"start": 0, "end": 4, "keep": 30}}),
            WEN_CIFTI,
        )
    with pytest.raises(InputError, match=r"seg1_1_Atlas\.dtseries\.nii: run has 20 volumes but segment 'seg1'"):
        preprocess_subject(
            "subject1",
            subject,
            None,
            tmp_path / "o.h5",
            WEN_SEGMENTS,
            2.0,
            FmriConfig.from_dict({**WEN_PARAMS, "unpaired_clips": "error"}),
            WEN_CIFTI,
        )
    with pytest.raises(InputError, match="no usable voxels"):  # untrimmed: the NaN volumes spoil every voxel
        preprocess_subject(
            "subject1",
            subject,
            None,
            tmp_path / "o.h5",
            WEN_SEGMENTS,
            2.0,
            FmriConfig.from_dict({**WEN_PARAMS, "trim": {"start": 0, "end": 0, "keep": None}}),
            WEN_CIFTI,
        )
    with pytest.raises(InputError, match=r"fmri/test2: no \*_Atlas\.dtseries\.nii runs"):
        preprocess_subject(
            "subject1", subject, None, tmp_path / "o.h5", {**WEN_SEGMENTS, "test": ["test2"]}, 2.0, WEN, WEN_CIFTI
        )
    with pytest.raises(InputError, match=r"header TR is 2 s but the config says 1\.5 s"):
        preprocess_subject("subject1", subject, None, tmp_path / "o.h5", WEN_SEGMENTS, 1.5, WEN, WEN_CIFTI)
    assert not list(tmp_path.glob("*.h5"))  # neither an artifact nor a scratch file is left behind


def test_wen2018_mni_volumes(tmp_path):
    from wen2018 import GRID, write_wen2018

    write_wen2018(tmp_path, ["subject1"], WEN_SEGMENTS, keep=20)
    out = tmp_path / "subject1.h5"
    preprocess_subject(
        "subject1",
        tmp_path / "subject1",
        tmp_path / "mni_mask.nii.gz",
        out,
        WEN_SEGMENTS,
        2.0,
        WEN,
        RunLayout.from_data({"layout": "wen2018", "wen2018": {"images": "mni"}}),
    )
    with open_artifact(out, "fmri", ("train/bold",)) as f:
        assert f.attrs["layout"] == "volume" and f.attrs["space"] == "MNI152"
        assert f["train/bold"].shape == (72,) + GRID and f["mask"][:].sum() == 24


def test_cleaning_equals_nilearn_signal_clean():
    """Linear detrend + z-score equals nilearn's signal.clean(detrend=True, standardize='zscore_sample') on
    real EPI (nibabel's functional.nii)."""
    from nilearn.signal import clean

    img = nib.load(Path(nib.__file__).parent / "tests" / "data" / "functional.nii")
    data = np.asarray(img.dataobj, dtype=np.float32)
    series = data[data.mean(-1) > 0].T.copy()  # (T, V) brain voxels
    expected = clean(series.astype(np.float64), detrend=True, standardize="zscore_sample", t_r=2.0)
    ours = series.copy()
    usable, _ = clean_run(ours, FmriConfig.from_dict({**FMRI_PARAMS, "detrend_order": 1}), 2.0)
    assert usable.all()
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_resample_runs_onto_the_mask_grid(tmp_path):
    """A mask on a grid shifted by one voxel: without resample the run is refused; with it, each voxel of the
    output is the run's neighbour (trilinear interpolation at integer offsets is exact)."""
    src = Path(nib.__file__).parent / "tests" / "data" / "functional.nii"
    img = nib.load(src)
    func = tmp_path / "sub-01" / "func"
    func.mkdir(parents=True)
    shutil.copy(src, func / "sub-01_task-movie_run-01_bold.nii")
    pd.DataFrame({"onset": [0.0], "duration": [36.0], "segment": ["clip"]}).to_csv(
        func / "sub-01_task-movie_run-01_events.tsv", sep="\t", index=False
    )
    shifted = img.affine.copy()
    shifted[:3, 3] += img.affine[:3, 0]  # the mask's voxel i is the run's voxel i + 1 along x
    brain = np.asarray(img.dataobj).mean(-1) > 0
    mask = np.zeros(brain.shape, bool)
    mask[:-1] = brain[1:] & brain[:-1]
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), shifted), tmp_path / "mask.nii.gz")
    same = tmp_path / "same.nii.gz"
    nib.save(nib.Nifti1Image(np.roll(mask, 1, axis=0).astype(np.uint8), img.affine), same)
    params = {**FMRI_PARAMS, "hrf_lag": 0.0, "detrend_order": 1}
    segments = {"train": ["clip"], "test": []}
    with pytest.raises(InputError, match=r"affine differs from the mask .*fmri.resample: true"):
        preprocess_subject(
            "sub-01",
            tmp_path / "sub-01",
            tmp_path / "mask.nii.gz",
            tmp_path / "r.h5",
            segments,
            2.0,
            FmriConfig.from_dict(params),
        )
    preprocess_subject(
        "sub-01",
        tmp_path / "sub-01",
        tmp_path / "mask.nii.gz",
        tmp_path / "r.h5",
        segments,
        2.0,
        FmriConfig.from_dict({**params, "resample": True}),
    )
    preprocess_subject(
        "sub-01", tmp_path / "sub-01", same, tmp_path / "s.h5", segments, 2.0, FmriConfig.from_dict(params)
    )
    with h5py.File(tmp_path / "r.h5") as r, h5py.File(tmp_path / "s.h5") as s:
        assert np.abs(s["train/bold"][:]).sum() > 0
        np.testing.assert_allclose(r["train/bold"][:][:, :-1], s["train/bold"][:][:, 1:], atol=1e-4)


def test_atlas_labels_select_the_mask(tiny_demo, tmp_path):
    roi = nib.load(tiny_demo / "roi_mask.nii.gz")
    atlas = (np.asarray(roi.dataobj) > 0) * (1 + (np.indices(roi.shape)[0] % 3))  # labels 1, 2, 3 in x stripes
    nib.save(nib.Nifti1Image(atlas.astype(np.int16), roi.affine), tmp_path / "atlas.nii.gz")
    out = tmp_path / "o.h5"
    preprocess_subject(
        "sub-01",
        tiny_demo / "sub-01",
        tmp_path / "atlas.nii.gz",
        out,
        TINY_SEGMENTS,
        2.0,
        FmriConfig.from_dict({**FMRI_PARAMS, "mask_labels": [2]}),
    )
    with h5py.File(out) as f:
        assert (f["mask"][:].astype(bool) == (atlas == 2)).all()
    with pytest.raises(InputError, match=r"atlas\.nii\.gz: mask selects no voxels \(labels \[9\]\)"):
        preprocess_subject(
            "sub-01",
            tiny_demo / "sub-01",
            tmp_path / "atlas.nii.gz",
            out,
            TINY_SEGMENTS,
            2.0,
            FmriConfig.from_dict({**FMRI_PARAMS, "mask_labels": [9]}),
        )
