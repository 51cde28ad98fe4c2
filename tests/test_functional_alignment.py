"""Functional alignment of held-out subjects (shared response model): it recovers a known orthogonal map
between subjects on synthetic data, and its fit never opens the test split."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import DEFAULTS

from llm4brain.artifacts import ArtifactError, atomic_h5, open_artifact, write_keys
from llm4brain.fmri.functional_alignment import align_subject, connectivity_targets, fit_shared_response
from llm4brain.sections import AlignFunctionalAlignmentConfig

GRID = (4, 4, 3)  # 48 voxels, 42 in the mask
K, N_TRAIN, N_TEST = 4, 120, 20
SUBJECTS = ["sub-01", "sub-02", "sub-03"]
PARAMS = {**DEFAULTS["align"]["functional_alignment"], "method": "srm", "features": K, "n_iter": 20}
SRM = AlignFunctionalAlignmentConfig.from_dict(PARAMS)
CONNECTIVITY = AlignFunctionalAlignmentConfig.from_dict({**PARAMS, "method": "connectivity-srm"})


def fit_srm(paths: list[Path], out: Path, functional_alignment: AlignFunctionalAlignmentConfig = SRM) -> None:
    """The fit with sub-03 held out, seed 0."""
    fit_shared_response(
        fmri_paths=paths,
        subjects=SUBJECTS,
        heldout=["sub-03"],
        out_path=out,
        functional_alignment=functional_alignment,
        seed=0,
    )


def mask() -> np.ndarray:
    m = np.ones(GRID, bool)
    m[0, :2] = False
    return m


def write_subject(path: Path, w: np.ndarray, shared: dict[str, np.ndarray], repeat: bool, seed: int) -> Path:
    """Volumes ``w @ s + noise`` in the mask for each split's shared responses; ``repeat`` shows the first
    training segment twice (the fit must average the two)."""
    rng = np.random.default_rng(seed)
    keys = {
        "train": [("a", t) for t in range(N_TRAIN // 2)] + [("b", t) for t in range(N_TRAIN // 2)],
        "test": [("t", t) for t in range(N_TEST)],
    }
    with atomic_h5(path, "fmri") as f:
        for split, s in shared.items():
            rows, columns = list(keys[split]), np.arange(s.shape[1])
            if repeat and split == "train":
                rows, columns = rows + keys[split][: N_TRAIN // 2], np.concatenate([columns, columns[: N_TRAIN // 2]])
            bold = np.zeros((len(rows), *GRID), np.float32)
            bold[:, mask()] = (w @ s[:, columns] + 0.01 * rng.standard_normal((len(w), len(columns)))).T
            group = f.create_group(split)
            group.create_dataset("bold", data=bold, chunks=(1, *GRID))
            write_keys(group, [k[0] for k in rows], [k[1] for k in rows])
        f.create_dataset("mask", data=mask().astype(np.uint8))
        f.attrs["tr"] = 2.0
        f.attrs["affine"] = json.dumps(np.eye(4).tolist())  # every subject on one grid, as preprocessing writes it
    return path


def orthonormal(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return np.linalg.qr(rng.standard_normal((n, k)))[0]


@pytest.fixture
def subjects(tmp_path: Path) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
    """Three subjects with one k-dimensional shared response; sub-03 is sub-01 under a random rotation of its
    voxels (an orthogonal map the alignment must undo)."""
    rng = np.random.default_rng(0)
    n_voxels = int(mask().sum())
    shared = {"train": rng.standard_normal((K, N_TRAIN)), "test": rng.standard_normal((K, N_TEST))}
    w1 = orthonormal(rng, n_voxels, K)
    rotation = orthonormal(rng, n_voxels, n_voxels)
    maps = [w1, orthonormal(rng, n_voxels, K), rotation @ w1]
    paths = [
        str(write_subject(tmp_path / f"{s}.h5", w, shared, repeat=i == 0, seed=i))
        for i, (s, w) in enumerate(zip(SUBJECTS, maps, strict=True))
    ]
    return paths, w1, shared


def fit_and_align(
    tmp_path: Path, paths: list[str], reference: str | None, name: str = "srm.h5", params: dict | None = None
) -> np.ndarray:
    fit_srm(paths, tmp_path / name, AlignFunctionalAlignmentConfig.from_dict(params or PARAMS))
    align_subject(
        fmri_path=paths[2],
        srm_path=tmp_path / name,
        subject="sub-03",
        out_path=tmp_path / "aligned.h5",
        functional_alignment=AlignFunctionalAlignmentConfig.from_dict({**PARAMS, "reference": reference}),
    )
    with open_artifact(tmp_path / "aligned.h5", "fmri", ("train/bold", "test/bold", "mask")) as f:
        assert f["train/bold"].shape == (N_TRAIN, *GRID) and f["test/bold"].shape == (N_TEST, *GRID)
        assert f.attrs["tr"] == 2.0 and [k.decode() for k in f["test/segment"][:3]] == ["t"] * 3
        return f["test/bold"][:][:, mask()]


def zscored_like_train(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    return (test - train.mean(0)) / train.std(0)


def test_alignment_recovers_a_known_orthogonal_map(tmp_path, subjects):
    """sub-03's test volumes, carried into sub-01's space, are sub-01's own test volumes (z-scored by the
    training split); before alignment they are unrelated."""
    paths, w1, shared = subjects
    aligned = fit_and_align(tmp_path, paths, reference="sub-01")
    expected = zscored_like_train((w1 @ shared["train"]).T, (w1 @ shared["test"]).T)
    assert np.corrcoef(aligned.ravel(), expected.ravel())[0, 1] > 0.99
    np.testing.assert_allclose(aligned, expected, atol=0.1 * np.abs(expected).max())
    with h5py.File(paths[2], "r") as f:
        raw = f["test/bold"][:][:, mask()]
    assert abs(np.corrcoef(raw.ravel(), expected.ravel())[0, 1]) < 0.3


def with_reliability(path: str, reliability: np.ndarray, split: str = "train") -> str:
    """The per-voxel repeat reliability preprocess_fmri writes (qc), computed from ``split``'s repeats."""
    with h5py.File(path, "a") as f:
        f.create_dataset("qc/reliability", data=reliability.astype(np.float32))
        f.create_dataset("qc/usable", data=np.ones(len(reliability), np.uint8))
        f.attrs["params"] = json.dumps({"reliability": {"select": False, "split": split, "threshold": 0.1}})
    return path


def test_a_bounded_fit_solves_every_voxel_from_the_most_reliable_ones(tmp_path, subjects, monkeypatch):
    """max_voxels below the mask: BrainIAK sees only each subject's 12 most reliable voxels, yet every voxel
    gets a map (SRM's W-step against the fitted shared response), and sub-03 is still carried onto sub-01's
    own test volumes."""
    from brainiak.funcalign.srm import SRM

    paths, w1, shared = subjects
    n_voxels = int(mask().sum())
    reliability = [np.random.default_rng(10 + i).random(n_voxels) for i in range(3)]
    for path, r in zip(paths, reliability, strict=True):
        with_reliability(path, r)
    seen: list[np.ndarray] = []
    fit = SRM.fit
    monkeypatch.setattr(SRM, "fit", lambda self, x, *a, **k: seen.extend(x) or fit(self, x, *a, **k))
    aligned = fit_and_align(tmp_path, paths, "sub-01", params={**PARAMS, "max_voxels": 12})
    assert [x.shape for x in seen] == [(12, N_TRAIN)] * 3
    with h5py.File(paths[1], "r") as f:  # sub-02's fitted rows are its 12 most reliable voxels' responses
        top = np.sort(np.argsort(-reliability[1])[:12])
        np.testing.assert_allclose(seen[1][:, 0], f["train/bold"][0][mask()][top], rtol=1e-6)  # clip 0: row 0
    with h5py.File(tmp_path / "srm.h5", "r") as f:
        assert f["sub-03/w"].shape == (n_voxels, K) and f["sub-03"].attrs["fitted_voxels"] == 12
    expected = zscored_like_train((w1 @ shared["train"]).T, (w1 @ shared["test"]).T)
    assert np.corrcoef(aligned.ravel(), expected.ravel())[0, 1] > 0.99
    np.testing.assert_allclose(aligned, expected, atol=0.1 * np.abs(expected).max())


def test_solving_a_map_streamed_equals_the_w_step_in_memory(subjects):
    """solve_map, summed a block of rows at a time, equals SRM's W-step on the clip-averaged responses held
    in memory (sub-01 shows a segment twice: its repeats are averaged, not summed), for any shared response."""
    from llm4brain.fmri.functional_alignment import shared_clips, solve_map, train_responses

    paths, _, _ = subjects
    clips = shared_clips(paths)
    shared = np.random.default_rng(5).normal(1.0, 1.0, (K, len(clips)))  # not centred: μ's term counts
    _, responses = train_responses(paths[0], clips)
    mu = responses.mean(1)
    u, _, vt = np.linalg.svd((responses - mu[:, None]) @ shared.T, full_matrices=False)
    w, solved_mu = solve_map(paths[0], clips, shared)
    np.testing.assert_allclose(solved_mu, mu, atol=1e-10)
    np.testing.assert_allclose(w, u @ vt, atol=1e-8)


def test_a_bounded_fit_never_chooses_voxels_by_test_reliability(tmp_path, subjects):
    paths, _, _ = subjects
    for path in paths:
        with_reliability(path, np.linspace(0, 1, int(mask().sum())), split="test")
    with pytest.raises(ArtifactError, match=r"sub-01\.h5: 42 voxels, above .*max_voxels \(12\).*split 'test'"):
        fit_and_align(tmp_path, paths, "sub-01", params={**PARAMS, "max_voxels": 12})


def test_group_reference_is_the_mean_of_the_labelled_maps(tmp_path, subjects):
    """With no reference subject, the target is the mean of sub-01's and sub-02's maps: the aligned volumes
    correlate with both subjects' responses to the same test clips."""
    paths, _, _ = subjects
    aligned = fit_and_align(tmp_path, paths, reference=None)
    for path in paths[:2]:
        with h5py.File(path, "r") as f:
            own = f["test/bold"][:][:, mask()]
        assert np.corrcoef(aligned.ravel(), own.ravel())[0, 1] > 0.5


def with_test_replaced(tmp_path: Path, path: str, seed: int) -> str:
    """A copy of a subject's artifact whose test volumes are noise far from its training volumes."""
    copy = tmp_path / f"noise-test-{Path(path).name}"
    copy.write_bytes(Path(path).read_bytes())
    with h5py.File(copy, "a") as f:
        bold = f["test/bold"]
        bold[...] = 50.0 + 10.0 * np.random.default_rng(seed).standard_normal(bold.shape)
    return str(copy)


@pytest.mark.parametrize("functional_alignment", [SRM, CONNECTIVITY], ids=["srm", "connectivity-srm"])
def test_fit_never_reads_the_test_split(tmp_path, subjects, functional_alignment):
    """Every subject's test volumes replaced by noise: the same maps, voxel means and masks."""
    paths, _, _ = subjects
    noisy = [with_test_replaced(tmp_path, path, i) for i, path in enumerate(paths)]
    for name, fmri_paths in (("with.h5", paths), ("noise.h5", noisy)):
        fit_srm(fmri_paths, tmp_path / name, functional_alignment)
    with h5py.File(tmp_path / "with.h5", "r") as a, h5py.File(tmp_path / "noise.h5", "r") as b:
        assert a.attrs["split"] == "train"
        for s in SUBJECTS:
            for name in ("w", "mu", "mask"):
                np.testing.assert_array_equal(a[s][name][:], b[s][name][:], err_msg=f"{s}/{name}")


def test_heldout_z_scoring_uses_its_training_split_only(tmp_path, subjects):
    """The held-out subject's test volumes replaced by noise: its carried training split and the z-scoring
    statistics stored with the map are unchanged (its test split, carried with them, is what differs)."""
    paths, _, _ = subjects
    fit_srm(paths, tmp_path / "srm.h5", SRM)
    carried = {}
    for name, path in (("original", paths[2]), ("noise", with_test_replaced(tmp_path, paths[2], 7))):
        out = tmp_path / f"aligned-{name}.h5"
        align_subject(
            fmri_path=path, srm_path=tmp_path / "srm.h5", subject="sub-03", out_path=out, functional_alignment=SRM
        )
        with h5py.File(out, "r") as f:
            carried[name] = {key: f[key][:] for key in ("train/bold", "test/bold", *STANDARD)}
    for key in ("train/bold", *STANDARD):
        np.testing.assert_array_equal(carried["original"][key], carried["noise"][key], err_msg=key)
    assert not np.allclose(carried["original"]["test/bold"], carried["noise"]["test/bold"])


STANDARD = ("functional_alignment/mean", "functional_alignment/std")


@pytest.mark.parametrize("functional_alignment", [SRM, CONNECTIVITY], ids=["srm", "connectivity-srm"])
def test_fit_opens_no_test_dataset(tmp_path, subjects, monkeypatch, functional_alignment):
    """Every HDF5 object the fit opens by name lies outside /test."""
    paths, _, _ = subjects
    opened: list[str] = []
    getitem = h5py.Group.__getitem__

    def record(self, name):
        item = getitem(self, name)
        opened.append(getattr(item, "name", "") or "")
        return item

    monkeypatch.setattr(h5py.Group, "__getitem__", record)
    fit_srm(paths, tmp_path / "srm.h5", functional_alignment)
    assert "/train/bold" in opened and not [name for name in opened if name.startswith("/test")]


def test_bad_reference_and_too_many_features_name_the_config_key(tmp_path, subjects):
    paths, _, _ = subjects
    with pytest.raises(ValueError, match="features"):
        fit_srm(paths, tmp_path / "srm.h5", AlignFunctionalAlignmentConfig.from_dict({**PARAMS, "features": N_TRAIN}))
    assert not (tmp_path / "srm.h5").exists()
    with pytest.raises(ValueError, match="reference 'sub-03' is not a labelled subject"):
        fit_and_align(tmp_path, paths, reference="sub-03")
    with pytest.raises(ArtifactError, match="no map of subject"):
        align_subject(
            fmri_path=paths[2],
            srm_path=tmp_path / "srm.h5",
            subject="sub-09",
            out_path=tmp_path / "x.h5",
            functional_alignment=SRM,
        )
    assert not (tmp_path / "aligned.h5").exists()


def test_domain_adaptation_switches_are_in_the_schema_with_descriptions():
    import yaml

    schema = yaml.safe_load((Path(__file__).parents[1] / "config" / "schema.yaml").read_text())
    align = schema["properties"]["align"]["properties"]
    switches = [align["loss"]["properties"][term] for term in ("domain", "target_mbm", "adversarial")]
    switches += [align["functional_alignment"]["properties"][key] for key in ("method", "features", "n_iter")]
    switches += [align["functional_alignment"]["properties"]["reference"], align["functional_alignment"]]
    assert all("default" in s and len(s.get("description", "")) > 20 for s in switches)
    assert align["functional_alignment"]["properties"]["method"]["enum"] == ["none", "srm", "connectivity-srm"]
    ablations = set(align["ablations"]["items"]["enum"])
    assert {"no_domain_adaptation", "no_adversarial", "no_functional_alignment"} <= ablations
    assert DEFAULTS["align"]["loss"]["adversarial"] >= 0 and "method" in DEFAULTS["align"]["functional_alignment"]


def test_a_new_run_is_carried_as_the_pipeline_carried_the_subject(tmp_path, subjects):
    """``llm4brain decode`` on a held-out subject's new run applies the map the aligner's inputs went through
    (read back from the aligned artifact), and only when that replicate's aligner used one."""
    import json
    import shutil

    from llm4brain.evaluate.new_run import heldout_carry

    paths, _, _ = subjects
    aligned = fit_and_align(tmp_path, paths, reference=None)
    with h5py.File(paths[2], "r") as f:
        raw = f["test/bold"][:]
    run = tmp_path / "r0"
    (run / "align" / "model").mkdir(parents=True)
    (run / "fmri" / "aligned").mkdir(parents=True)
    shutil.copy(tmp_path / "aligned.h5", run / "fmri" / "aligned" / "sub-03.h5")
    for method, expected in (("srm", True), ("none", False)):
        align = {"heldout": ["sub-03"], "functional_alignment": {**PARAMS, "method": method}}
        (run / "align" / "model" / "config.json").write_text(json.dumps({"align": align}))
        assert (heldout_carry(run, "sub-03") is not None) == expected and heldout_carry(run, "sub-01") is None
    # carry all: the labelled subjects went through the shared space too, and so do their new runs
    shutil.copy(tmp_path / "aligned.h5", run / "fmri" / "aligned" / "sub-01.h5")
    every = {**align, "functional_alignment": {**PARAMS, "method": "srm", "carry": "all"}}
    (run / "align" / "model" / "config.json").write_text(json.dumps({"align": every}))
    assert heldout_carry(run, "sub-01") is not None
    (run / "align" / "model" / "config.json").write_text(
        json.dumps({"align": {**align, "functional_alignment": PARAMS}})
    )
    carry = heldout_carry(run, "sub-03")
    assert carry is not None
    np.testing.assert_allclose(carry(raw)[:, mask()], aligned, rtol=1e-5, atol=1e-5)


def test_connectivity_srm_aligns_a_subject_that_watched_other_clips(tmp_path):
    """sub-03 is sub-01 with its voxels shuffled within each connectivity target's cube (its own layout inside
    each parcel) and watched other training clips than sub-01 and sub-02: no clip is shared, so SRM cannot be
    fitted, but its voxels' connectivity with the targets is sub-01's, and connectivity SRM carries its test
    volumes into sub-01's space."""
    rng = np.random.default_rng(0)
    n_voxels = int(mask().sum())
    w1 = orthonormal(rng, n_voxels, K)
    cube = connectivity_targets([mask()], CONNECTIVITY.target_block, ["grid"])[mask()]
    shuffled = np.arange(n_voxels)
    for target in np.unique(cube):
        members = np.flatnonzero(cube == target)
        shuffled[members] = rng.permutation(members)
    assert (shuffled != np.arange(n_voxels)).mean() > 0.5
    test = rng.standard_normal((K, N_TEST))
    labelled = {"train": rng.standard_normal((K, N_TRAIN)), "test": test}
    own = {"train": rng.standard_normal((K, N_TRAIN)), "test": test}  # other clips, drawn alike
    maps = [w1, orthonormal(rng, n_voxels, K), w1[shuffled]]
    paths = [
        str(write_subject(tmp_path / f"{s}.h5", w, own if s == "sub-03" else labelled, repeat=False, seed=i))
        for i, (s, w) in enumerate(zip(SUBJECTS, maps, strict=True))
    ]
    with h5py.File(paths[2], "a") as f:  # its training clips are its own: other segments
        del f["train/segment"], f["train/tr"]
        write_keys(f["train"], ["own"] * N_TRAIN, list(range(N_TRAIN)))
    with pytest.raises(ValueError, match="share only 0 training clips"):
        fit_srm(paths, tmp_path / "srm.h5", SRM)
    aligned = fit_and_align(tmp_path, paths, reference="sub-01", params=CONNECTIVITY.to_dict())
    expected = zscored_like_train((w1 @ labelled["train"]).T, (w1 @ test).T)
    assert np.corrcoef(aligned.ravel(), expected.ravel())[0, 1] > 0.9
    with h5py.File(paths[2], "r") as f:
        raw = f["test/bold"][:][:, mask()]
    assert abs(np.corrcoef(raw.ravel(), expected.ravel())[0, 1]) < 0.3
    with h5py.File(tmp_path / "srm.h5", "r") as f, h5py.File(tmp_path / "aligned.h5", "r") as a:
        assert f.attrs["method"] == a.attrs["functional_alignment"] == "connectivity-srm"
        assert f.attrs["targets"] == cube.max() + 1


def test_connectivity_targets_are_the_cubes_every_subject_reaches(tmp_path):
    """Cubes of target_block voxels a side, numbered in grid order, each a target only where every subject's
    mask reaches it; subjects on different grids are an error naming the file."""
    first, second = np.zeros((4, 4, 2), bool), np.zeros((4, 4, 2), bool)
    first[0, 0, 0] = first[3, 3, 1] = first[0, 3, 0] = True  # cubes (0,0,0), (1,1,0), (0,1,0)
    second[1, 1, 1] = second[2, 2, 0] = True  # cubes (0,0,0), (1,1,0)
    targets = connectivity_targets([first, second], 2, ["a.h5", "b.h5"])
    assert targets[0, 0, 0] == targets[1, 1, 1] == 0 and targets[3, 3, 1] == targets[2, 2, 0] == 1
    assert targets[0, 3, 0] == -1 and set(np.unique(targets)) == {-1, 0, 1}
    assert (connectivity_targets([first], 1, ["a.h5"])[first] == [0, 1, 2]).all()
    with pytest.raises(ArtifactError, match="b.h5: grid"):
        connectivity_targets([first, np.zeros((4, 4, 3), bool)], 2, ["a.h5", "b.h5"])


def test_connectivity_profiles_are_fisher_z_correlations_with_the_targets_means(subjects, monkeypatch):
    """Streamed ROWS volumes at a time, each profile equals the in-memory computation: arctanh of the Pearson
    correlation, over the subject's training volumes, of each mask voxel with each target's mean time series
    over the subject's voxels in it; the means are the voxels' training means."""
    from llm4brain.fmri import functional_alignment as fa

    paths, _, _ = subjects
    monkeypatch.setattr(fa, "ROWS", 50)  # several blocks per subject
    masks, means, profiles = fa.connectivity_profiles(paths, 2)
    targets = connectivity_targets(masks, 2, paths)[mask()]
    for path, voxel_means, profile in zip(paths, means, profiles, strict=True):
        with h5py.File(path, "r") as f:
            x = f["train/bold"][:][:, mask()].astype(np.float64)
        t = np.stack([x[:, targets == j].mean(1) for j in range(targets.max() + 1)], 1)
        r = np.corrcoef(x.T, t.T)[: x.shape[1], x.shape[1] :]
        np.testing.assert_allclose(profile, np.arctanh(r), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(voxel_means, x.mean(0), rtol=1e-9, atol=1e-12)


def test_connectivity_srm_refuses_subjects_in_different_spaces(tmp_path, subjects):
    """Targets are cubes of one volume grid: another affine, or grayordinates, is an error naming the file,
    and no artifact is left."""
    paths, _, _ = subjects
    for path, scale in zip(paths, (1, 1, 2), strict=True):
        with h5py.File(path, "a") as f:
            f.attrs["affine"] = json.dumps((np.diag([scale, scale, scale, 1])).tolist())
    with pytest.raises(ArtifactError, match=f"{paths[2]}: its affine differs from {paths[0]}'s"):
        fit_srm(paths, tmp_path / "srm.h5", CONNECTIVITY)
    with h5py.File(paths[1], "a") as f:
        f.attrs["layout"], f.attrs["structures"] = "vector", json.dumps(["CIFTI_STRUCTURE_CORTEX_LEFT"])
    with pytest.raises(ArtifactError, match=f"{paths[1]}: grayordinates"):
        fit_srm(paths, tmp_path / "srm.h5", CONNECTIVITY)
    assert not (tmp_path / "srm.h5").exists()
