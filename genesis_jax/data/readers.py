"""Volume readers: NIfTI, MetaImage (.mhd/.mha), NRRD and DICOM series to one canonical orientation, with spacing.

Every volume leaves this module as a ``Volume`` whose array axes are (x, y, z) in nibabel's closest-canonical RAS+
orientation (index x grows towards the patient's right, y towards anterior, z towards superior) with a 4x4 voxel-to-world (RAS, mm) affine. One orientation for every source means a cube, a label and a
candidate coordinate mean the same thing whichever file format they came from.

Bad input raises ``VolumeError`` naming the file and the reason: unreadable or truncated files, 2D or 4D data,
NaN/Inf or complex voxels, a NaN/Inf or singular affine, headers claiming more bytes than the file holds or than the
memory available (``$GENESIS_JAX_MAX_VOLUME_BYTES`` sets another limit; refused before anything is allocated),
non-integer labels, and label grids that do not match their image (``check_same_grid``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from genesis_jax.data.dicom import read_dicom_series
from genesis_jax.data.errors import VolumeError
from genesis_jax.data.metaimage import read_metaimage
from genesis_jax.data.nrrd import read_nrrd
from genesis_jax.runtime import available_host_memory

log = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mhd", ".mha", ".nrrd", ".img", ".hdr")


@dataclasses.dataclass
class Volume:
    """A 3D volume in canonical (RAS+) orientation.

    array:   (X, Y, Z); float32 for images (HU for CT), an integer type for label maps.
    spacing: voxel size in mm along (x, y, z).
    affine:  4x4 voxel index -> world (RAS, mm).
    path:    where it was read from ('' when built in memory).
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    path: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]


def is_volume_file(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return name.endswith(VOLUME_SUFFIXES) and not name.endswith(".hdr")  # .hdr is read through its .img


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(s) for s in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))  # type: ignore


def to_canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Permute/flip voxel axes to the closest RAS+ orientation (what ``nibabel.as_closest_canonical`` does)."""
    from nibabel import orientations

    ornt = orientations.io_orientation(affine)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return array, np.asarray(affine, dtype=np.float64)
    new_affine = np.asarray(affine, dtype=np.float64) @ orientations.inv_ornt_aff(ornt, array.shape[:3])
    return orientations.apply_orientation(array, ornt), new_affine


MAX_VOLUME_BYTES_ENV = "GENESIS_JAX_MAX_VOLUME_BYTES"


def max_volume_bytes() -> int:
    """The most bytes one volume's voxels may claim: ``$GENESIS_JAX_MAX_VOLUME_BYTES``, else the host memory
    available now."""
    return int(os.environ.get(MAX_VOLUME_BYTES_ENV) or available_host_memory())


def _gunzipped_size(path: Path, *, stop_after: int) -> int:
    """Bytes a gzip file decompresses to, counted in bounded chunks (nothing the size of the data is held), up to
    ``stop_after``."""
    import zlib

    inflater, total = zlib.decompressobj(16 + zlib.MAX_WBITS), 0
    with path.open("rb") as f:
        while total < stop_after and (chunk := f.read(1 << 20)):
            while chunk and total < stop_after:
                total += len(inflater.decompress(chunk, 1 << 24))
                chunk = inflater.unconsumed_tail
            if inflater.eof:
                break
    return total


def _check_nifti_size(header: Any, path: Path) -> None:
    """Refuse a header whose voxels need more bytes than the file holds, before reading allocates them (a lying or
    damaged header would otherwise allocate up to gigabytes first). A .nii.gz is judged by its gzip trailer, which
    records the uncompressed size modulo 2**32."""
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return  # .hdr/.img pairs: the data are in the other file
    shape = tuple(int(d) for d in header.get_data_shape())
    needed = int(header.get_data_offset()) + math.prod(shape) * header.get_data_dtype().itemsize
    limit = max_volume_bytes()
    if needed > limit:
        raise VolumeError(f"{path}: the header describes {shape} voxels of {header.get_data_dtype()} ({needed:,} "
                          f"bytes), more than the {limit:,} bytes a volume may take here (the memory available; "
                          f"${MAX_VOLUME_BYTES_ENV} sets another limit): a wrong header, or a volume to crop first")
    if name.endswith(".gz"):
        if needed >= 2**32:  # the trailer holds the size modulo 2**32: count the decompressed bytes instead
            available = _gunzipped_size(path, stop_after=needed)
        else:
            with path.open("rb") as f:
                f.seek(-4, os.SEEK_END)
                available = int.from_bytes(f.read(4), "little")
        holds = f"decompresses to {available:,} bytes"
    else:
        available = path.stat().st_size
        holds = f"holds {available:,} bytes"
    if needed > available:
        raise VolumeError(f"{path}: the header describes {shape} voxels of {header.get_data_dtype()} ({needed:,} bytes) "
                          f"but the file {holds}: truncated, or a wrong header")


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    try:
        image = nib.load(str(path))
        _check_nifti_size(image.header, path)
        array = np.asanyarray(image.dataobj)
    except VolumeError:
        raise
    except Exception as err:  # nibabel raises many types (EOFError, zlib.error, ImageFileError, ValueError...)
        raise VolumeError(f"{path}: cannot read as NIfTI ({type(err).__name__}: {err}); the file may be truncated "
                          "or corrupt") from None
    return array, np.asarray(image.affine, dtype=np.float64)


def _as_3d(array: np.ndarray, path: str | Path) -> np.ndarray:
    # Trailing singleton axes (a (X, Y, Z, 1) NIfTI) are harmless; anything else is not a 3D volume.
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise VolumeError(f"{path}: a 3D volume is needed, got a {array.ndim}D array of shape {tuple(array.shape)}")
    if min(array.shape) < 2:
        raise VolumeError(f"{path}: a 3D volume is needed, got shape {tuple(array.shape)} (a single slice)")
    return array


def _real_voxels(array: np.ndarray, path: str | Path) -> np.ndarray:
    if array.dtype.kind == "c":  # a cast would drop the imaginary part (numpy's ComplexWarning names no file)
        raise VolumeError(f"{path}: complex-valued voxels ({array.dtype}); a real-valued image is needed (store the "
                          "magnitude)")
    if array.dtype.kind not in "biuf":
        raise VolumeError(f"{path}: voxels of type {array.dtype} are not numbers")
    return array


def check_affine(affine: np.ndarray, path: str | Path) -> np.ndarray:
    """The 4x4 voxel-to-world affine, refused when it has NaN/Inf or its 3x3 part is singular (no orientation or
    spacing can be derived from it)."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise VolumeError(f"{path}: the voxel-to-world affine holds NaN or Inf values; fix the header (sform/qform)")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise VolumeError(f"{path}: the voxel-to-world affine is singular (a zero voxel size or collapsed axes); fix "
                          "the header (sform/qform)")
    return affine


def _finite_image(array: np.ndarray, path: str | Path) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32)
    bad = array.size - int(np.count_nonzero(np.isfinite(array)))
    if bad:
        raise VolumeError(f"{path}: {bad} voxel(s) are NaN or Inf")
    return array


def _integer_label(array: np.ndarray, path: str | Path) -> np.ndarray:
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise VolumeError(f"{path}: a label map must hold integer class ids, found non-integer values")
    elif array.dtype.kind not in "iub":
        raise VolumeError(f"{path}: a label map must hold integer class ids, found dtype {array.dtype}")
    lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
    if lo < 0:
        raise VolumeError(f"{path}: a label map must hold non-negative class ids, found {lo}")
    return array.astype(np.uint8 if hi < 256 else np.int32)


def read_volume(path: str | os.PathLike, *, kind: Literal["image", "label"] = "image",
                canonical: bool = True) -> Volume:
    """Read a NIfTI file, a MetaImage (.mhd/.mha), an NRRD file or a DICOM series directory as a canonical ``Volume``.

    kind='image' gives float32 (HU for CT) and rejects NaN/Inf; kind='label' gives uint8/int32 class ids.
    """
    path = Path(path)
    if not path.exists():
        raise VolumeError(f"{path}: no such file or directory")
    if path.is_dir():
        array, affine = read_dicom_series(path)
    else:
        name = path.name.lower()
        if name.endswith((".mhd", ".mha")):
            array, affine = read_metaimage(path)
        elif name.endswith(".nrrd"):
            array, affine = read_nrrd(path)
        elif name.endswith((".nii", ".nii.gz", ".img", ".hdr")):
            array, affine = _read_nifti(path)
        else:
            raise VolumeError(f"{path}: unknown volume format (expected one of {', '.join(VOLUME_SUFFIXES)} "
                              "or a DICOM series directory)")
    array = _real_voxels(_as_3d(np.asarray(array), path), path)
    affine = check_affine(affine, path)
    array = _finite_image(array, path) if kind == "image" else _integer_label(array, path)
    if kind == "image" and array.size and array.min() == array.max():
        log.warning("%s: every voxel is %g: a constant volume (nothing to restore or segment)", path, array.flat[0])
    if canonical:
        array, affine = to_canonical(array, affine)
    return Volume(np.ascontiguousarray(array), spacing_from_affine(affine), affine, str(path))


def check_same_grid(image: Volume, label: Volume, *, atol_mm: float = 1e-2) -> None:
    """Raise VolumeError unless ``label`` lies on the voxel grid of ``image`` (shape and affine)."""
    if image.shape != label.shape:
        raise VolumeError(f"{label.path}: label grid {label.shape} does not match image {image.path} grid "
                          f"{image.shape}")
    if not np.allclose(image.affine, label.affine, atol=atol_mm):
        raise VolumeError(f"{label.path}: label affine does not match image {image.path} affine "
                          f"(max difference {np.abs(image.affine - label.affine).max():.4g} mm)")


def resample(volume: Volume, target_spacing: tuple[float, float, float], *, order: int | None = None) -> Volume:
    """Resample to ``target_spacing`` (mm); linear for float images, nearest for labels unless ``order`` is given.

    The field of view is kept (voxel edges aligned); the affine is updated to the new grid.
    """
    target = np.asarray(target_spacing, dtype=np.float64)
    if target.shape != (3,) or np.any(target <= 0):
        raise ValueError(f"target_spacing must be 3 positive numbers, got {target_spacing}")
    spacing = np.asarray(volume.spacing)
    if np.allclose(spacing, target, rtol=1e-4):
        return volume
    in_shape = np.asarray(volume.shape)
    out_shape = np.maximum(1, np.round(in_shape * spacing / target)).astype(int)
    zoom = out_shape / in_shape
    if order is None:
        order = 1 if volume.array.dtype.kind == "f" else 0
    array = zoom_to_shape(volume.array, tuple(out_shape), order=order)
    affine = volume.affine.copy()
    # Grid-mode zoom maps voxel edges onto voxel edges: new voxel i sits at old coordinate (i + 0.5) / zoom - 0.5.
    affine[:3, 3] = volume.affine[:3, :3] @ (0.5 / zoom - 0.5) + volume.affine[:3, 3]
    affine[:3, :3] = volume.affine[:3, :3] / zoom
    return Volume(array.astype(volume.array.dtype, copy=False), spacing_from_affine(affine), affine, volume.path)


def zoom_to_shape(array: np.ndarray, shape: tuple[int, ...], *, order: int) -> np.ndarray:
    """Resample the first len(shape) axes of ``array`` to exactly ``shape`` over the same field of view (voxel
    edges aligned, as :func:`resample`; trailing axes, e.g. channels, kept): the way back from a resampled grid to
    the original one is ``zoom_to_shape(x, original_shape)``."""
    from scipy import ndimage

    spatial = len(shape)
    zoom = [s / a for s, a in zip(shape, array.shape[:spatial])] + [1.0] * (array.ndim - spatial)
    if all(z == 1.0 for z in zoom):
        return array
    out = ndimage.zoom(array, zoom, order=order, mode="nearest", grid_mode=True)
    if out.shape[:spatial] != tuple(shape):  # scipy rounds input_shape * zoom; this is the exact ratio
        raise AssertionError(f"zoom_to_shape: got {out.shape[:spatial]}, wanted {tuple(shape)}")
    return out
