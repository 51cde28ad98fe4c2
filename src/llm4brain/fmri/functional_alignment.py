"""Functional alignment of held-out subjects to the labelled ones: a shared response model (SRM) fitted on
the responses to the training clips every subject watched.

The subjects saw the same training segments, so their training-split samples, joined on ``(segment, tr)``,
are stimulus-locked. BrainIAK's probabilistic SRM (Chen et al. 2015) fits each subject i an orthonormal map
``W_i`` (voxels × k) with ``x_i ≈ W_i s + μ_i`` for one k-dimensional shared response ``s``. A held-out
subject's volume ``x`` is carried into the labelled subjects' voxel space as
``x̂ = W_ref W_h^T (x - μ_h) + μ_ref``, where ``W_ref, μ_ref`` are one labelled subject's or the mean of the
labelled subjects' (the group's), and z-scored per voxel with the statistics of its training split; the
encoder trained on the labelled subjects then reads it.

Two steps, kept apart: :func:`fit_shared_response` reads the ``train`` split only (the test split's fMRI
never shapes a map); :func:`align_subject` applies the fitted map to both splits. SRM holds every subject's
training responses (voxels × clips, one sample per clip, repeats averaged, float64) in memory while it fits, and
BrainIAK about as much again. So the fit is bounded (``max_voxels``): a subject with more voxels is fitted on
its most reliable ones across the training segments' repeats, then every voxel's map is solved against the
fitted shared response by SRM's own W-step, streamed (memory voxels × k, not voxels × clips).

Where the held-out subject watched other training clips than the labelled ones, no response is stimulus-locked
across subjects, but each voxel's functional connectivity still is comparable: ``connectivity-srm`` (Nastase
et al. 2020, after connectivity hyperalignment, Guntupalli et al. 2018) fits the same model on each subject's
voxels × targets matrix of Fisher-z correlations, over its own training volumes, between every voxel and the
mean time series of anatomical targets (the cubes of :func:`connectivity_targets`), and carries the time series
with the maps it finds. It needs every subject on one grid and only unlabelled training-split fMRI.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence

import h5py
import numpy as np
from scipy import sparse

from llm4brain.artifacts import ArtifactError, atomic_h5, open_artifact, read_keys, set_attrs, write_keys
from llm4brain.runtime import LOG
from llm4brain.sections import AlignFunctionalAlignmentConfig

ROWS = 256  # volumes read, mapped and written at a time


def fitted_voxels(path: str | os.PathLike, max_voxels: int | None) -> np.ndarray | None:
    """Which of the subject's mask voxels (indices, in mask order) SRM is fitted on: every one (``None``) when
    there are at most ``max_voxels``, else the ``max_voxels`` most reliable across the training segments'
    repeats (the artifact's ``qc/reliability``, which must come from the train split: test fMRI never chooses)."""
    with open_artifact(path, "fmri", ("mask",)) as f:
        n_voxels = int(f["mask"][:].astype(bool).sum())
        if max_voxels is None or n_voxels <= max_voxels:
            return None
        split = json.loads(f.attrs.get("params", "{}")).get("reliability", {}).get("split")
        if split != "train" or "qc" not in f:
            raise ArtifactError(
                f"{path}: {n_voxels} voxels, above align.functional_alignment.max_voxels ({max_voxels}), and no "
                f"training-split repeat reliability to choose them by (qc/reliability from split {split!r}): "
                "rerun preprocess_fmri with fmri.reliability.split: train, or raise max_voxels"
            )
        reliability = f["qc"]["reliability"][:][f["qc"]["usable"][:].astype(bool)]
    if len(reliability) != n_voxels or not np.isfinite(reliability).any():
        raise ArtifactError(
            f"{path}: no training-split repeat reliability for its {n_voxels} voxels (are training segments "
            f"shown more than once?): align.functional_alignment.max_voxels ({max_voxels}) needs it, or raise it"
        )
    return np.sort(np.argsort(-np.nan_to_num(reliability, nan=-np.inf), kind="stable")[:max_voxels])


def train_responses(
    path: str | os.PathLike, keys: Sequence[tuple[str, int]], voxels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The subject's mask (grid) and its training-split response (voxels in the mask, or those of them that
    ``voxels`` indexes, × len(keys)) to each clip of ``keys``, repeats averaged. Opens ``/train`` and ``/mask``
    only."""
    with open_artifact(path, "fmri", ("train/bold", "train/segment", "train/tr", "mask")) as f:
        mask = f["mask"][:].astype(bool)
        train = f["train"]
        rows = clip_columns(train, keys)
        if mask.shape != train["bold"].shape[1:]:
            raise ArtifactError(f"{path}: mask {mask.shape} differs from train/bold volumes {train['bold'].shape[1:]}")
        sums = np.zeros((int(mask.sum()) if voxels is None else len(voxels), len(keys)))
        for start, block in _blocks(train["bold"]):
            cols = rows[start : start + len(block)]
            kept = cols >= 0
            values = block[kept][:, mask]
            np.add.at(sums.T, cols[kept], values if voxels is None else values[:, voxels])
    counts = np.bincount(rows[rows >= 0], minlength=len(keys))
    return mask, sums / counts


def clip_columns(train: h5py.Group, keys: Sequence[tuple[str, int]]) -> np.ndarray:
    """Per row of the split, its clip's index in ``keys`` (-1: a clip not in them)."""
    column = {key: i for i, key in enumerate(keys)}
    return np.array([column.get(key, -1) for key in read_keys(train)])


def solve_map(
    path: str | os.PathLike, keys: Sequence[tuple[str, int]], shared: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Every mask voxel's map ``W`` (voxels × k, orthonormal columns) and mean ``μ`` against a fitted shared
    response ``shared`` (k × len(keys)): SRM's W-step, ``W = U Vᵀ`` for ``(X - μ) Sᵀ = U Σ Vᵀ``, with X the
    clip-averaged training responses. ``X Sᵀ`` and ``μ`` are summed ``ROWS`` rows at a time, so X is never held."""
    with open_artifact(path, "fmri", ("train/bold", "train/segment", "train/tr", "mask")) as f:
        mask = f["mask"][:].astype(bool)
        rows = clip_columns(f["train"], keys)
        counts = np.bincount(rows[rows >= 0], minlength=len(keys))
        product, total = np.zeros((int(mask.sum()), len(shared))), np.zeros(int(mask.sum()))
        for start, block in _blocks(f["train"]["bold"]):
            cols = rows[start : start + len(block)]
            kept = cols[cols >= 0]
            values = block[cols >= 0][:, mask] / counts[kept, None]  # each row's share of its clip's average
            product += values.T @ shared[:, kept].T
            total += values.sum(0)
    mu = total / len(keys)
    u, _, vt = np.linalg.svd(product - np.outer(mu, shared.sum(1)), full_matrices=False)
    return u @ vt, mu


def shared_clips(paths: Sequence[str | os.PathLike]) -> list[tuple[str, int]]:
    """The training clips ``(segment, tr)`` every subject has a sample of, sorted."""
    common: set[tuple[str, int]] | None = None
    for path in paths:
        with open_artifact(path, "fmri", ("train/segment", "train/tr")) as f:
            keys = set(read_keys(f["train"]))
        common = keys if common is None else common & keys
    return sorted(common or ())


def fit_shared_response(
    *,
    fmri_paths: Sequence[str | os.PathLike],
    subjects: Sequence[str],
    heldout: Sequence[str],
    out_path: str | os.PathLike,
    functional_alignment: AlignFunctionalAlignmentConfig,
    seed: int,
) -> None:
    """Fit BrainIAK's SRM on every subject's training-split fMRI, and write each subject's map ``/{subject}/w``
    (voxels × k), voxel means ``/{subject}/mu`` and ``/{subject}/mask``.

    Args:
        fmri_paths: every subject's preprocessed fMRI, in the order of ``subjects``.
        subjects: the subjects, labelled and held out.
        heldout: those held out (recorded, for :func:`reference_map`).
        out_path: the ``funcalign`` artifact written.
        functional_alignment: the ``align.functional_alignment`` section: ``method`` (``srm``, on the responses
            to the training clips every subject watched, or ``connectivity-srm``, on each voxel's connectivity),
            ``features`` (k), ``n_iter`` (EM iterations), ``max_voxels`` (srm) and ``target_block``
            (connectivity-srm).
        seed: SRM's random initialisation.
    """
    from brainiak.funcalign.srm import SRM  # imports mpi4py, which loads the MPI library: only when fitting

    features = functional_alignment.features
    model = SRM(n_iter=functional_alignment.n_iter, features=features, rand_seed=seed)
    if functional_alignment.method == "connectivity-srm":
        masks, means, profiles = connectivity_profiles(fmri_paths, functional_alignment.target_block)
        if profiles[0].shape[1] <= features:
            raise ValueError(
                f"config align.functional_alignment.features {features}: only {profiles[0].shape[1]} connectivity "
                f"targets (target_block {functional_alignment.target_block}); it must be below that"
            )
        LOG.info(
            "connectivity SRM: %d subjects x %d targets, %d features", len(profiles), profiles[0].shape[1], features
        )
        model.fit(profiles)
        # the maps carry time series: the voxels' training-split means, not their profiles', are what x - μ removes
        maps = list(zip(model.w_, means, strict=True))
        fitted, extra = [len(w) for w in model.w_], {"targets": profiles[0].shape[1]}
    else:
        clips = shared_clips(fmri_paths)
        if len(clips) <= features:
            raise ValueError(
                f"config align.functional_alignment.features {features}: the subjects share only {len(clips)} "
                f"training clips ({', '.join(map(str, fmri_paths))}); it must be below that"
            )
        voxels = [fitted_voxels(path, functional_alignment.max_voxels) for path in fmri_paths]
        masks, responses = zip(
            *(train_responses(path, clips, chosen) for path, chosen in zip(fmri_paths, voxels, strict=True)),
            strict=True,
        )
        for path, response in zip(fmri_paths, responses, strict=True):
            if len(response) < features:
                raise ValueError(
                    f"{path}: {len(response)} voxels, fewer than align.functional_alignment.features ({features})"
                )
        LOG.info("SRM: %d subjects x %d shared training clips, %d features", len(responses), len(clips), features)
        model.fit(list(responses))
        del responses
        maps = [  # a subject fitted on some of its voxels gets every voxel's map from the shared response
            (w, mu) if chosen is None else solve_map(path, clips, model.s_)
            for path, w, mu, chosen in zip(fmri_paths, model.w_, model.mu_, voxels, strict=True)
        ]
        fitted = [len(w) if chosen is None else len(chosen) for (w, _), chosen in zip(maps, voxels, strict=True)]
        extra = {"n_clips": len(clips)}
    with atomic_h5(out_path, "funcalign", functional_alignment.to_dict()) as f:
        for subject, (w, mu), mask, count in zip(subjects, maps, masks, fitted, strict=True):
            group = f.create_group(subject)
            group.attrs["fitted_voxels"] = count
            group.create_dataset("w", data=w.astype(np.float32))
            group.create_dataset("mu", data=mu.astype(np.float32))
            group.create_dataset("mask", data=mask.astype(np.uint8))
        set_attrs(
            f,
            {
                "subjects": list(subjects),
                "heldout": list(heldout),
                "method": functional_alignment.method,
                **extra,
                "features": features,
                "split": "train",
            },
        )


def connectivity_targets(masks: Sequence[np.ndarray], block: int, paths: Sequence[str | os.PathLike]) -> np.ndarray:
    """Per voxel of the subjects' shared grid, the connectivity target it belongs to (-1: none): the grid is tiled
    by cubes of ``block`` voxels a side, and each cube that every subject's mask reaches is a target, numbered in
    grid order. Subjects on different grids share no anatomy to take targets from, so that is an error."""
    grid = masks[0].shape
    for path, mask in zip(paths, masks, strict=True):
        if mask.shape != grid:
            raise ArtifactError(
                f"{path}: grid {mask.shape} differs from {paths[0]}'s {grid}; align.functional_alignment.method "
                "connectivity-srm takes its targets from one grid shared by every subject"
            )
    cube = np.asarray(np.ravel_multi_index(tuple(np.indices(grid) // block), tuple(-(-n // block) for n in grid)))
    covered = np.logical_and.reduce([np.bincount(cube[mask], minlength=cube.max() + 1) > 0 for mask in masks])
    number = np.where(covered, np.cumsum(covered) - 1, -1)
    return number[cube]


def connectivity_profiles(
    paths: Sequence[str | os.PathLike], block: int
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Per subject its mask, its voxels' training-split means and its connectivity profile: the Fisher-z
    correlation, over its training volumes, of each mask voxel with each target's mean time series over the
    subject's voxels in it (voxels × targets, targets from :func:`connectivity_targets`). Opens ``/train/bold``
    and ``/mask`` only; sums ``ROWS`` volumes at a time, so memory is voxels × targets."""
    from llm4brain.fmri.images import VolumeSpace, space_from_artifact  # nibabel: only this method needs it

    spaces = []
    for path in paths:
        with open_artifact(path, "fmri", ("train/bold", "mask")) as f:
            space, _ = space_from_artifact(f)
        if not isinstance(space, VolumeSpace):
            raise ArtifactError(
                f"{path}: grayordinates (layout vector), not a volume: align.functional_alignment.method "
                "connectivity-srm takes its targets from cubes of a volume grid shared by every subject"
            )
        spaces.append(space)
    masks = [space.mask for space in spaces]
    for path, space in zip(paths, spaces, strict=True):
        if not spaces[0].on_grid(space):
            raise ArtifactError(
                f"{path}: its affine differs from {paths[0]}'s; align.functional_alignment.method connectivity-srm "
                "takes its targets from one grid shared by every subject (resample them to one space)"
            )
    targets = connectivity_targets(masks, block, paths)
    n_targets = int(targets.max()) + 1
    means, profiles = [], []
    for path, mask in zip(paths, masks, strict=True):
        owner = targets[mask]  # per mask voxel, its target (-1: a cube some subject does not reach)
        inside = np.flatnonzero(owner >= 0)
        size = np.bincount(owner[inside], minlength=n_targets)
        average = sparse.csr_matrix((1.0 / size[owner[inside]], (inside, owner[inside])), shape=(len(owner), n_targets))
        sx, sxx = np.zeros(len(owner)), np.zeros(len(owner))
        st, stt, sxt, n = np.zeros(n_targets), np.zeros(n_targets), np.zeros((len(owner), n_targets)), 0
        with open_artifact(path, "fmri", ("train/bold", "mask")) as f:
            for _, volumes in _blocks(f["train"]["bold"]):
                x = volumes[:, mask]
                t = np.asarray(x @ average)
                sx, sxx, st, stt = sx + x.sum(0), sxx + (x**2).sum(0), st + t.sum(0), stt + (t**2).sum(0)
                sxt += x.T @ t
                n += len(x)
        if n < 3:
            raise ArtifactError(f"{path}: {n} training volumes, too few to correlate voxels with connectivity targets")
        mx, mt = sx / n, st / n
        sd_x, sd_t = np.sqrt(np.maximum(sxx / n - mx**2, 0.0)), np.sqrt(np.maximum(stt / n - mt**2, 0.0))
        scale = np.outer(sd_x, sd_t)
        r = np.divide(sxt / n - np.outer(mx, mt), scale, out=np.zeros_like(scale), where=scale > 0)
        means.append(mx)
        profiles.append(np.arctanh(np.clip(r, -0.999999, 0.999999)))
    return masks, means, profiles


def reference_map(srm: h5py.File, reference: str | None, path: str | os.PathLike) -> tuple[np.ndarray, ...]:
    """``(W, μ, mask)`` of the space held-out subjects are carried into: one labelled subject's, or (None) the
    mean of the labelled subjects' maps placed on the grid, over the union of their masks."""
    subjects, heldout = json.loads(srm.attrs["subjects"]), set(json.loads(srm.attrs["heldout"]))
    labelled = [s for s in subjects if s not in heldout]
    if reference is not None and reference not in labelled:
        raise ValueError(
            f"config align.functional_alignment.reference {reference!r} is not a labelled subject of {path} "
            f"({labelled})"
        )
    chosen = [reference] if reference is not None else labelled
    grid = srm[chosen[0]]["mask"].shape
    w = np.zeros((int(np.prod(grid)), int(srm.attrs["features"])))
    mu, covered = np.zeros(w.shape[0]), np.zeros(w.shape[0])
    for subject in chosen:
        mask = srm[subject]["mask"][:].astype(bool).ravel()
        w[mask] += srm[subject]["w"][:]
        mu[mask] += srm[subject]["mu"][:]
        covered += mask
    union = covered > 0
    return w[union] / covered[union, None], mu[union] / covered[union], union.reshape(grid)


def align_subject(
    *,
    fmri_path: str | os.PathLike,
    srm_path: str | os.PathLike,
    subject: str,
    out_path: str | os.PathLike,
    functional_alignment: AlignFunctionalAlignmentConfig,
) -> None:
    """Carry a held-out subject's fMRI (both splits) into the reference space of the fitted SRM and write it as
    an fmri artifact of the same samples and keys; each voxel is z-scored with its training split's mean and
    standard deviation.

    Args:
        fmri_path: the subject's preprocessed fMRI.
        srm_path: the maps :func:`fit_shared_response` wrote.
        subject: whose map carries it.
        out_path: the carried ``fmri`` artifact written.
        functional_alignment: the ``align.functional_alignment`` section (``reference``).
    """
    with open_artifact(srm_path, "funcalign") as srm:
        if subject not in srm:
            raise ArtifactError(
                f"{srm_path}: no map of subject {subject!r} (fitted: {json.loads(srm.attrs['subjects'])})"
            )
        w_h, mu_h = srm[subject]["w"][:].astype(np.float64), srm[subject]["mu"][:].astype(np.float64)
        mask_h = srm[subject]["mask"][:].astype(bool)
        w_ref, mu_ref, mask_ref = reference_map(srm, functional_alignment.reference, srm_path)
        method = str(srm.attrs["method"])
    carry = Carry(w_h, mu_h, mask_h, w_ref, mu_ref, mask_ref)
    with open_artifact(fmri_path, "fmri", ("train/bold", "test/bold", "mask")) as source:
        if not np.array_equal(source["mask"][:].astype(bool), mask_h):
            raise ArtifactError(f"{fmri_path}: its mask differs from the one {srm_path} was fitted on")
        total, squares, n = np.zeros(int(mask_ref.sum())), np.zeros(int(mask_ref.sum())), 0
        for _, block in _blocks(source["train"]["bold"]):
            values = carry.mapped(block)
            total, squares, n = total + values.sum(0), squares + (values**2).sum(0), n + len(values)
        carry.mean = total / max(n, 1)
        carry.std = np.sqrt(np.maximum(squares / max(n, 1) - carry.mean**2, 0.0))
        carry.std[carry.std == 0] = 1.0
        with atomic_h5(out_path, "fmri", functional_alignment.to_dict()) as f:
            for split in ("train", "test"):
                bold = source[split]["bold"]
                group = f.create_group(split)
                out = group.create_dataset(
                    "bold", bold.shape, np.float32, chunks=(1, *bold.shape[1:]) if len(bold) else None
                )
                for start, block in _blocks(bold):
                    out[start : start + len(block)] = carry(block)
                write_keys(group, source[split]["segment"].asstr()[:], source[split]["tr"][:])
            f.create_dataset("mask", data=mask_ref.astype(np.uint8))
            carry.save(f.create_group("functional_alignment"))
            header = ("schema", "stage", "created_by", "config_hash")
            set_attrs(f, {k: v for k, v in source.attrs.items() if k not in header})  # tr, hrf_lag, affine, space, …
            set_attrs(
                f,
                {
                    "functional_alignment": method,
                    "reference": functional_alignment.reference or "group",
                    "source": str(fmri_path),
                },
            )
    LOG.info(
        "%s: carried into the %s space of %s", subject, functional_alignment.reference or "labelled group's", srm_path
    )


class Carry:
    """A held-out subject's volumes (n, *grid) → the reference space, z-scored per voxel by ``mean``, ``std``
    (its mapped training split's): what :func:`align_subject` applies to both splits and what a new run of
    the subject needs (:meth:`load` from the aligned artifact's ``/functional_alignment``)."""

    FIELDS = ("w_h", "mu_h", "mask_h", "w_ref", "mu_ref", "mask_ref", "mean", "std")

    def __init__(self, *arrays: np.ndarray) -> None:
        self.w_h, self.mu_h, self.mask_h, self.w_ref, self.mu_ref, self.mask_ref = arrays[:6]
        standard = arrays[6:] if len(arrays) == 8 else (np.zeros(len(self.w_ref)), np.ones(len(self.w_ref)))
        self.mean: np.ndarray = standard[0]
        self.std: np.ndarray = standard[1]

    def mapped(self, volumes: np.ndarray) -> np.ndarray:
        """(n, voxels in the reference mask): through the shared response, before z-scoring."""
        return ((volumes[:, self.mask_h] - self.mu_h) @ self.w_h) @ self.w_ref.T + self.mu_ref

    def __call__(self, volumes: np.ndarray) -> np.ndarray:
        out = np.zeros((len(volumes), *self.mask_ref.shape), np.float32)
        out[:, self.mask_ref] = (self.mapped(volumes.astype(np.float64)) - self.mean) / self.std
        return out

    def save(self, group: h5py.Group) -> None:
        for name in self.FIELDS:
            group.create_dataset(name, data=getattr(self, name))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Carry:
        with open_artifact(path, "fmri", tuple(f"functional_alignment/{name}" for name in cls.FIELDS)) as f:
            return cls(*(f["functional_alignment"][name][:] for name in cls.FIELDS))


def _blocks(bold: h5py.Dataset) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, rows)`` of a split's volumes, ``ROWS`` at a time."""
    for start in range(0, len(bold), ROWS):
        yield start, bold[start : start + ROWS].astype(np.float64)
