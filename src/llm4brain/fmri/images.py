"""Where a subject's samples live and how one run is read into it: a NIfTI volume grid under an ROI mask
(resampled onto the mask's grid when asked), or selected CIFTI grayordinates.

A run is read a few volumes at a time, so a whole-brain 4-D file never sits in memory next to its masked
copy; the result is the run's (T, V) float32 series.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import nibabel as nib
import numpy as np
from nibabel import cifti2

from llm4brain.fmri.runs import InputError, header_tr

CHUNK = 32  # volumes read per slice of the file
CORTEX = ["CIFTI_STRUCTURE_CORTEX_LEFT", "CIFTI_STRUCTURE_CORTEX_RIGHT"]


def is_cifti(path: Path) -> bool:
    return Path(path).name.endswith(".dtseries.nii")


def open_image(path: Path) -> Any:
    """The image with its file kept open, so chunked reads of a ``.nii.gz`` only ever seek forward."""
    try:
        return nib.load(path, keep_file_open=True) if not is_cifti(path) else nib.load(path)
    except Exception as err:  # nibabel raises many kinds for truncated or corrupt files
        raise InputError(f"{path}: cannot read image ({type(err).__name__}: {err})") from err


def check_tr(found: float, tr: float, path: Path) -> None:
    if abs(found - tr) > 1e-3:
        hint = " (milliseconds stored as seconds? fix the header's time unit)" if abs(found / 1000 - tr) < 1e-3 else ""
        raise InputError(f"{path}: header TR is {found:g} s but the config says {tr:g} s{hint}")


def read_rows(path: Path, read: Any, n: int, start: int, stop: int, width: int) -> np.ndarray:
    """``read(t0, t1)`` → (t1 - t0, width) rows, called chunk by chunk; decode errors name the file."""
    out = np.empty((stop - start, width), np.float32)
    try:
        for t0 in range(start, stop, CHUNK):
            t1 = min(t0 + CHUNK, stop)
            out[t0 - start:t1 - start] = read(t0, t1)
    except InputError:
        raise
    except Exception as err:
        raise InputError(f"{path}: cannot read volumes {start}..{stop} of {n} ({type(err).__name__}: {err})") from err
    return out


class VolumeSpace:
    """Voxels of a NIfTI ROI mask (or of an atlas' listed labels). Samples are stored as whole grids."""

    layout = "volume"

    def __init__(self, mask_path: str | Path, labels: list[int] | None = None, resample: bool = False) -> None:
        self.mask_path = Path(mask_path)
        img = open_image(self.mask_path)
        if len(img.shape) != 3:
            raise InputError(f"{self.mask_path}: mask must be 3-D, got shape {img.shape}")
        values = np.asarray(img.dataobj)
        self.mask = np.isin(values, labels) if labels else values > 0
        if not self.mask.any():
            raise InputError(f"{self.mask_path}: mask selects no voxels" + (f" (labels {labels})" if labels else ""))
        self.affine, self.resample = img.affine, resample
        self.shape: tuple[int, ...] = self.mask.shape

    @classmethod
    def from_mask(cls, mask: np.ndarray, affine: np.ndarray, name: str) -> VolumeSpace:
        """A space from a stored mask (a training artifact's kept voxels) instead of a mask file."""
        space = cls.__new__(cls)
        space.mask_path, space.mask, space.affine, space.resample, space.shape = Path(name), mask, affine, False, mask.shape
        return space

    def samples(self, rows: np.ndarray, usable: np.ndarray) -> np.ndarray:
        """(n, V) rows → (n, X, Y, Z) grids, zero outside the mask and at unusable voxels."""
        out = np.zeros((len(rows),) + self.shape, np.float32)
        out[:, self.mask] = rows * usable
        return out

    def n_volumes(self, path: Path, tr: float) -> int:
        img = open_image(path)
        if len(img.shape) != 4:
            raise InputError(f"{path}: expected a 4-D image, got shape {img.shape}")
        check_tr(header_tr(img, path), tr, path)
        if not self.resample and (img.shape[:3] != self.shape or not np.allclose(img.affine, self.affine, atol=1e-3)):
            what = f"grid {img.shape[:3]}" if img.shape[:3] != self.shape else "affine"
            raise InputError(f"{path}: {what} differs from the mask {self.mask_path} ({self.shape}); set "
                             f"fmri.resample: true to resample runs onto the mask's grid")
        return img.shape[3]

    def read(self, path: Path, start: int, stop: int) -> np.ndarray:
        """Volumes ``start:stop`` inside the mask, (T, V); resampled (trilinear) onto the mask's grid if the run's differs."""
        img = open_image(path)
        same = img.shape[:3] == self.shape and np.allclose(img.affine, self.affine, atol=1e-3)

        def read(t0: int, t1: int) -> np.ndarray:
            block = np.asarray(img.dataobj[..., t0:t1], dtype=np.float32)
            if not same:
                from nibabel.processing import resample_from_to

                block = np.stack([resample_from_to(nib.Nifti1Image(block[..., t], img.affine),
                                                   (self.shape, self.affine), order=1).get_fdata(dtype=np.float32)
                                  for t in range(block.shape[-1])], axis=-1)
            return block[self.mask].T

        return read_rows(path, read, img.shape[3], start, stop, int(self.mask.sum()))

    def attrs(self) -> dict[str, Any]:
        return {"layout": self.layout, "affine": self.affine.tolist(), "mask_file": str(self.mask_path)}


class SurfaceSpace:
    """Grayordinates of the listed CIFTI brain structures (default: both cortical surfaces, the 59,412
    cortical grayordinates of HCP's 91k space). Samples are stored as vectors over the selection."""

    layout = "vector"

    def __init__(self, structures: list[str]) -> None:
        self.structures = structures
        self.axis: cifti2.BrainModelAxis | None = None
        self.first: Path | None = None
        self.columns = np.zeros(0, np.int64)
        self.shape: tuple[int, ...] = (0,)

    def n_volumes(self, path: Path, tr: float) -> int:
        img = open_image(path)
        if not isinstance(img, cifti2.Cifti2Image) or len(img.shape) != 2:
            raise InputError(f"{path}: expected a 2-D CIFTI dense time series, got {type(img).__name__} {img.shape}")
        series, models = img.header.get_axis(0), img.header.get_axis(1)
        if not isinstance(series, cifti2.SeriesAxis) or not isinstance(models, cifti2.BrainModelAxis):
            raise InputError(f"{path}: expected (series, brain models) axes, got "
                             f"({type(series).__name__}, {type(models).__name__})")
        scale = {"SECOND": 1.0, "MSEC": 1e-3}.get(series.unit.upper())
        if scale is None:
            raise InputError(f"{path}: series axis unit is {series.unit}, not time")
        check_tr(series.step * scale, tr, path)
        if self.axis is None:
            self.axis, self.first = models, path
            self.columns = np.flatnonzero(np.isin(models.name, self.structures))
            if not self.columns.size:
                raise InputError(f"{path}: none of the structures {self.structures} is in the file "
                                 f"(it has {sorted(set(models.name))})")
            self.shape = (self.columns.size,)
        elif models != self.axis:
            raise InputError(f"{path}: its grayordinates differ from {self.first}'s (another CIFTI space?)")
        return img.shape[0]

    def read(self, path: Path, start: int, stop: int) -> np.ndarray:
        img = open_image(path)
        columns = self.columns
        return read_rows(path, lambda t0, t1: np.asarray(img.dataobj[t0:t1], dtype=np.float32)[:, columns],
                         img.shape[0], start, stop, columns.size)

    def samples(self, rows: np.ndarray, usable: np.ndarray) -> np.ndarray:
        """(n, V) rows over the selected grayordinates, zero at unusable ones."""
        return (rows * usable).astype(np.float32)

    def attrs(self) -> dict[str, Any]:
        return {"layout": self.layout, "structures": self.structures, "grayordinates": len(self.axis)}


def make_space(first_run: Path, mask_path: str | Path | None, params: dict[str, Any]) -> VolumeSpace | SurfaceSpace:
    """The space a subject's runs are read into: CIFTI runs → grayordinates, NIfTI runs → the ROI mask."""
    if is_cifti(first_run):
        return SurfaceSpace(params["cifti_structures"])
    if mask_path is None:
        raise InputError(f"{first_run}: a NIfTI run needs an ROI mask (data.mask)")
    return VolumeSpace(mask_path, params["mask_labels"], params["resample"])


def space_from_artifact(f: h5py.File) -> tuple[VolumeSpace | SurfaceSpace, np.ndarray]:
    """The space a ``results/fmri`` artifact was written in and its usable columns, to read a new run into
    exactly the training samples' layout."""
    if f.attrs.get("layout") == "vector":
        return SurfaceSpace(json.loads(f.attrs["structures"])), f["mask"][:].astype(bool)
    space = VolumeSpace.from_mask(f["mask"][:].astype(bool), np.array(json.loads(f.attrs["affine"])), f.filename)
    return space, np.ones(int(space.mask.sum()), bool)
