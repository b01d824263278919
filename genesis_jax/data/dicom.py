"""DICOM series (one directory of slices) to a volume in HU with a RAS affine.

Slices are grouped by SeriesInstanceUID (a directory with several series is an error that lists them), sorted
along the slice normal by ImagePositionPatient, and scaled with RescaleSlope/RescaleIntercept. Compressed
transfer syntaxes need a decoder: pillow >= 10 (with OpenJPEG) or pylibjpeg + pylibjpeg-openjpeg decode the JPEG 2000
series of the TotalSegmentator sample. pydicom is a core dependency (the default demo tests on a DICOM series).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from genesis_jax.data.errors import VolumeError

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _sop_class(ds) -> str:
    """The SOP class of a parsed file: the dataset's SOPClassUID, else the file meta's MediaStorageSOPClassUID."""
    meta = getattr(ds, "file_meta", None)
    return str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta is not None else ""))


def read_dicom_series(directory: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Return (HU array in index order (column, row, slice), 4x4 RAS affine). Raises VolumeError."""
    try:
        import pydicom
    except ImportError:
        raise VolumeError(f"{directory}: reading DICOM needs pydicom: pip install pydicom") from None
    directory = Path(directory)
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name.upper() != "DICOMDIR")
    series: dict[str, list] = {}
    without_pixels: list = []
    for f in files:
        try:
            ds = pydicom.dcmread(str(f))
        except pydicom.errors.InvalidDicomError as err:
            if is_dicom_file(f):  # it says it is DICOM (the DICM marker) but does not parse: name it, do not drop it
                raise VolumeError(f"{f}: cannot read DICOM ({err}); truncated or corrupt") from None
            continue  # not a DICOM file (a README, a thumbnail): ignore
        except Exception as err:
            raise VolumeError(f"{f}: cannot read DICOM ({type(err).__name__}: {err}); truncated or corrupt") from None
        if "PixelData" not in ds:
            if not _sop_class(ds) and is_dicom_file(f):
                # The DICM marker, then no SOP class anywhere: the bytes after the marker are damaged (pydicom parses
                # garbage into a few unknown elements). Dropping it would shorten the series without a word.
                raise VolumeError(f"{f}: cannot read DICOM (no SOP class and no pixel data after the DICM marker); "
                                  "truncated or corrupt")
            without_pixels.append((f, ds))
            continue
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((f, ds))
    if not series:
        raise VolumeError(f"{directory}: no DICOM image files found")
    # A file of the slices' own SOP class (CT Image Storage, ...) without pixels is a truncated slice, not a report
    image_classes = {_sop_class(ds) for slices in series.values() for _, ds in slices}
    for f, ds in without_pixels:
        if _sop_class(ds) in image_classes:
            raise VolumeError(f"{f}: DICOM image slice without pixel data; truncated or corrupt")
    if len(series) > 1:
        raise VolumeError(f"{directory}: holds {len(series)} DICOM series ({', '.join(sorted(series))}); "
                          "put each series in its own directory")
    slices = next(iter(series.values()))
    if len(slices) < 2:
        raise VolumeError(f"{directory}: a single DICOM slice is 2D; a 3D series is needed")
    first = slices[0][1]
    try:
        orient = np.array(first.ImageOrientationPatient, dtype=np.float64)
        row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    except AttributeError as err:
        raise VolumeError(f"{slices[0][0]}: missing geometry tag ({err})") from None
    row_dir, col_dir = orient[:3], orient[3:]  # row_dir: direction of increasing column index
    normal = np.cross(row_dir, col_dir)
    positions = np.array([np.asarray(ds.ImagePositionPatient, dtype=np.float64) for _, ds in slices])
    order = np.argsort(positions @ normal)
    slices = [slices[i] for i in order]
    positions = positions[order]
    steps = np.diff(positions @ normal)
    if np.any(steps <= 1e-6):
        raise VolumeError(f"{directory}: two slices share one position; is it one series?")
    if steps.max() - steps.min() > 0.1 * steps.mean():
        raise VolumeError(f"{directory}: slice spacing is not uniform ({steps.min():.3g} to {steps.max():.3g} mm); "
                          "slices may be missing")
    planes = []
    for f, ds in slices:
        try:
            pixels = ds.pixel_array
        except Exception as err:
            raise VolumeError(f"{f}: cannot decode pixel data ({type(err).__name__}: {err}); compressed DICOM needs "
                              "pillow with OpenJPEG or pip install pylibjpeg pylibjpeg-openjpeg") from None
        if planes and pixels.shape != planes[0].shape[::-1]:
            raise VolumeError(f"{f}: slice shape {pixels.shape} differs from the series' {planes[0].shape[::-1]}")
        slope, intercept = float(ds.get("RescaleSlope", 1.0)), float(ds.get("RescaleIntercept", 0.0))
        # pixel_array is (rows, columns); index order here is (column, row, slice).
        planes.append((pixels.astype(np.float32) * slope + intercept).T)
    array = np.stack(planes, axis=-1)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing
    lps[:3, 1] = col_dir * row_spacing
    lps[:3, 2] = (positions[-1] - positions[0]) / (len(positions) - 1)
    lps[:3, 3] = positions[0]
    return array, _LPS_TO_RAS @ lps
