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

from llm4brain.fmri.bids import is_cifti
from llm4brain.fmri.runs import InputError
from llm4brain.fmri.signal import column_blocks
from llm4brain.sections import FmriConfig

CHUNK = 8  # volumes of a NIfTI run read at a time (a whole-brain MNI 2 mm volume is 3.6 MB)


def open_image(path: Path) -> Any:
    """A NIfTI image with its file kept open, so chunked reads of a ``.nii.gz`` only ever seek forward."""
    try:
        return nib.load(path, keep_file_open=True)
    except Exception as err:  # nibabel raises many kinds for truncated or corrupt files
        raise InputError(f"{path}: cannot read image ({type(err).__name__}: {err})") from err


def header_tr(img: nib.Nifti1Image, path: Path) -> float:
    """The TR in seconds from the NIfTI header (``pixdim[4]`` with its time unit)."""
    zooms = img.header.get_zooms()
    if len(zooms) < 4:
        raise InputError(f"{path}: header has no time step (zooms {zooms})")
    unit = img.header.get_xyzt_units()[1]
    scale = {"msec": 1e-3, "usec": 1e-6}.get(unit, 1.0)
    return float(zooms[3]) * scale


def check_tr(found: float, tr: float, path: Path) -> None:
    if abs(found - tr) > 1e-3:
        hint = " (milliseconds stored as seconds? fix the header's time unit)" if abs(found / 1000 - tr) < 1e-3 else ""
        raise InputError(f"{path}: header TR is {found:g} s but the config says {tr:g} s{hint}")


def guarded(path: Path, read: Any) -> np.ndarray:
    """Run ``read()``; a decode error (truncated or corrupt data) becomes an InputError naming the file."""
    try:
        return read()
    except InputError:
        raise
    except Exception as err:
        raise InputError(f"{path}: cannot read the data ({type(err).__name__}: {err})") from err


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
        space.mask_path, space.mask, space.affine, space.resample, space.shape = (
            Path(name),
            mask,
            affine,
            False,
            mask.shape,
        )
        return space

    @property
    def n_voxels(self) -> int:
        return int(self.mask.sum())

    def samples(self, rows: np.ndarray, usable: np.ndarray) -> np.ndarray:
        """(n, V) rows → (n, X, Y, Z) grids, zero outside the mask and at unusable voxels."""
        out = np.zeros((len(rows),) + self.shape, np.float32)
        out[:, self.mask] = rows * usable
        return out

    def on_grid(self, img: Any) -> bool:
        """Whether a run shares the mask's grid and affine (otherwise it is resampled, or refused)."""
        return img.shape[:3] == self.shape and np.allclose(img.affine, self.affine, atol=1e-3)

    def n_volumes(self, path: Path, tr: float) -> int:
        img = open_image(path)
        if len(img.shape) != 4:
            raise InputError(f"{path}: expected a 4-D image, got shape {img.shape}")
        check_tr(header_tr(img, path), tr, path)
        if not self.resample and not self.on_grid(img):
            what = f"grid {img.shape[:3]}" if img.shape[:3] != self.shape else "affine"
            raise InputError(
                f"{path}: {what} differs from the mask {self.mask_path} ({self.shape}); set "
                f"fmri.resample: true to resample runs onto the mask's grid"
            )
        return img.shape[3]

    def read(self, path: Path, start: int, stop: int) -> np.ndarray:
        """Volumes ``start:stop`` inside the mask, (T, V); resampled (trilinear) onto the mask's grid if the
        run's differs."""
        img = open_image(path)
        same = self.on_grid(img)

        def read() -> np.ndarray:
            out = np.empty((stop - start, self.n_voxels), np.float32)
            for t0 in range(start, stop, CHUNK):  # NIfTI stores time slowest: a chunk of volumes is contiguous
                block = np.asarray(img.dataobj[..., t0 : min(t0 + CHUNK, stop)], dtype=np.float32)
                if not same:
                    from nibabel.processing import resample_from_to

                    block = np.stack(
                        [
                            resample_from_to(
                                nib.Nifti1Image(block[..., t], img.affine), (self.shape, self.affine), order=1
                            ).get_fdata(dtype=np.float32)
                            for t in range(block.shape[-1])
                        ],
                        axis=-1,
                    )
                out[t0 - start : t0 - start + block.shape[-1]] = block[self.mask].T
            return out

        return guarded(path, read)

    def attrs(self) -> dict[str, Any]:
        return {"layout": self.layout, "affine": self.affine.tolist(), "mask_file": str(self.mask_path)}


def open_cifti(path: Path, header: bool = True) -> tuple[cifti2.Cifti2Header | None, Any]:
    """A CIFTI-2 file's header (its XML matrix, parsed only if ``header``) and its data proxy.

    Read as the NIfTI-2 image it is: ``nib.load`` would also build brain-model axes from every vertex, which
    costs more than reading and cleaning the run; the header is checked from the parsed XML instead.
    """
    try:
        img = nib.Nifti2Image.from_filename(path, mmap=False)
        cifti = [ext for ext in img.header.extensions if ext.get_code() == 32]
        content = cifti[0].get_content() if cifti and header else None
    except Exception as err:
        raise InputError(f"{path}: cannot read as CIFTI-2 ({type(err).__name__}: {err})") from err
    if not cifti or len(img.shape) != 6 or img.shape[:4] != (1, 1, 1, 1):
        raise InputError(f"{path}: not a 2-D CIFTI dense time series (NIfTI-2 shape {img.shape})")
    return content, img.dataobj


def brain_model_signature(index_map: Any) -> list[tuple]:
    """What makes two brain-model axes the same grayordinates: structures, offsets and vertices/voxels."""
    return [
        (
            bm.brain_structure,
            bm.model_type,
            bm.index_offset,
            bm.index_count,
            bm.surface_number_of_vertices,
            np.asarray(bm.vertex_indices if bm.vertex_indices is not None else bm.voxel_indices_ijk).tobytes(),
        )
        for bm in index_map.brain_models
    ]


class SurfaceSpace:
    """Grayordinates of the listed CIFTI brain structures (default: both cortical surfaces, the 59,412
    cortical grayordinates of HCP's 91k space). Samples are stored as vectors over the selection."""

    layout = "vector"

    def __init__(self, structures: list[str]) -> None:
        self.structures = structures
        self.signature: list[tuple] | None = None
        self.first: Path | None = None
        self.n_grayordinates = 0
        self.columns = np.zeros(0, np.int64)
        self.shape: tuple[int, ...] = (0,)

    def n_volumes(self, path: Path, tr: float) -> int:
        """Time points of a run, after checking its TR and that its grayordinates are the first run's."""
        header, data = open_cifti(path)
        assert header is not None  # parsed: header=True
        series, models = header.get_index_map(0), header.get_index_map(1)
        if (
            series.indices_map_to_data_type != "CIFTI_INDEX_TYPE_SERIES"
            or models.indices_map_to_data_type != "CIFTI_INDEX_TYPE_BRAIN_MODELS"
        ):
            raise InputError(
                f"{path}: expected (series, brain models) axes, got "
                f"({series.indices_map_to_data_type}, {models.indices_map_to_data_type})"
            )
        scale = {"SECOND": 1.0, "MSEC": 1e-3}.get(str(series.series_unit).upper())
        if scale is None:
            raise InputError(f"{path}: series axis unit is {series.series_unit}, not time")
        check_tr(series.series_step * scale, tr, path)
        signature = brain_model_signature(models)
        if self.signature is None:
            axis = cifti2.BrainModelAxis.from_index_mapping(models)
            self.columns = np.flatnonzero(np.isin(axis.name, self.structures))
            if not self.columns.size:
                raise InputError(
                    f"{path}: none of the structures {self.structures} is in the file (it has {sorted(set(axis.name))})"
                )
            self.signature, self.first, self.n_grayordinates = signature, path, len(axis)
            self.shape = (self.columns.size,)
        elif signature != self.signature:
            raise InputError(f"{path}: its grayordinates differ from {self.first}'s (another CIFTI space?)")
        return int(data.shape[4])

    def read(self, path: Path, start: int, stop: int) -> np.ndarray:
        """Volumes ``start:stop`` of the selected grayordinates, (T, V)."""
        _, proxy = open_cifti(path, header=False)  # checked by n_volumes

        def read() -> np.ndarray:
            out = np.empty((stop - start, self.columns.size), np.float32)
            for block in column_blocks(self.columns.size):  # time varies fastest on disk: read by columns
                columns = self.columns[block]
                lo, hi = int(columns[0]), int(columns[-1]) + 1
                out[:, block] = np.asarray(proxy[0, 0, 0, 0, start:stop, lo:hi], dtype=np.float32)[:, columns - lo]
            return out

        return guarded(path, read)

    @property
    def n_voxels(self) -> int:
        return int(self.columns.size)

    def samples(self, rows: np.ndarray, usable: np.ndarray) -> np.ndarray:
        """(n, V) rows over the selected grayordinates, zero at unusable ones."""
        return (rows * usable).astype(np.float32)

    def attrs(self) -> dict[str, Any]:
        return {"layout": self.layout, "structures": self.structures, "grayordinates": self.n_grayordinates}


def make_space(first_run: Path, mask_path: str | Path | None, fmri: FmriConfig) -> VolumeSpace | SurfaceSpace:
    """The space a subject's runs are read into: CIFTI runs → grayordinates, NIfTI runs → the ROI mask
    (``fmri``'s ``cifti_structures``, ``mask_labels`` and ``resample``)."""
    if is_cifti(first_run):
        return SurfaceSpace(fmri.cifti_structures)
    if mask_path is None:
        raise InputError(f"{first_run}: a NIfTI run needs an ROI mask (data.mask)")
    return VolumeSpace(mask_path, fmri.mask_labels, fmri.resample)


def space_from_artifact(f: h5py.File) -> tuple[VolumeSpace | SurfaceSpace, np.ndarray]:
    """The space a ``results/fmri`` artifact was written in and its usable columns, to read a new run into
    exactly the training samples' layout."""
    if f.attrs.get("layout") == "vector":
        return SurfaceSpace(json.loads(f.attrs["structures"])), f["mask"][:].astype(bool)
    space = VolumeSpace.from_mask(f["mask"][:].astype(bool), np.array(json.loads(f.attrs["affine"])), f.filename)
    return space, np.ones(space.n_voxels, bool)
