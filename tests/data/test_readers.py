"""Readers: canonical orientation (world coordinates preserved), MetaImage, DICOM series, and bad input."""

import gzip

import numpy as np
import pytest

from genesis_jax.data.metaimage import write_metaimage
from genesis_jax.data.readers import Volume, VolumeError, check_same_grid, read_volume, resample
from tests.data.helpers import write_nifti


def _world_value_preserved(original, affine, volume: Volume, rng):
    """The value at a world point is the same before and after reorientation."""
    for _ in range(20):
        idx = np.array([rng.integers(s) for s in original.shape])
        world = affine @ np.r_[idx, 1.0]
        new_idx = np.rint(np.linalg.solve(volume.affine, world)[:3]).astype(int)
        assert volume.array[tuple(new_idx)] == original[tuple(idx)]


def test_nifti_to_canonical_ras_keeps_world_coordinates(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(7, 5, 6)).astype(np.float32)
    # voxel axes (i, j, k) -> world (-z, +x... ) : a permuted, flipped (LPI-like) affine
    affine = np.array([[0, -2.0, 0, 10], [0, 0, -3.0, 5], [1.5, 0, 0, -4], [0, 0, 0, 1]])
    path = write_nifti(tmp_path / "a.nii.gz", data, affine)
    vol = read_volume(path)
    assert vol.array.dtype == np.float32 and vol.path == str(path)
    assert np.all(np.diag(vol.affine[:3, :3]) > 0) and np.count_nonzero(vol.affine[:3, :3]) == 3  # RAS+
    assert vol.spacing == pytest.approx((2.0, 3.0, 1.5))
    assert vol.shape == (5, 6, 7)
    _world_value_preserved(data, affine, vol, rng)


def test_metaimage_roundtrip_lps_to_ras(tmp_path):
    rng = np.random.default_rng(1)
    hu = rng.integers(-1024, 2000, size=(9, 8, 5)).astype(np.int16)
    for name in ("scan.mhd", "scan.mha"):
        path = write_metaimage(tmp_path / name, hu, spacing=(0.7, 0.8, 2.5), origin=(-100.0, -50.0, -300.0))
        vol = read_volume(path)
        assert vol.spacing == pytest.approx((0.7, 0.8, 2.5))
        # LPS (ITK) index order flipped in x and y to be RAS+; the world point of LPS voxel 0 is (100, 50, -300) RAS.
        lps_affine = np.diag([-0.7, -0.8, 2.5, 1.0])
        lps_affine[:3, 3] = [100.0, 50.0, -300.0]
        _world_value_preserved(hu, lps_affine, vol, rng)
    assert (tmp_path / "scan.raw").exists()


def test_metaimage_truncated_raw_is_named(tmp_path):
    path = write_metaimage(tmp_path / "t.mhd", np.zeros((4, 4, 4), np.int16))
    raw = tmp_path / "t.raw"
    raw.write_bytes(raw.read_bytes()[:-10])
    with pytest.raises(VolumeError, match=r"t\.mhd.*expected 128 bytes.*found 118"):
        read_volume(path)


def test_bad_nifti_inputs_are_named(tmp_path):
    good = write_nifti(tmp_path / "good.nii.gz", np.zeros((6, 6, 6), np.float32))
    truncated = tmp_path / "trunc.nii.gz"
    truncated.write_bytes(good.read_bytes()[:60])
    with pytest.raises(VolumeError, match="trunc.nii.gz.*truncated or corrupt"):
        read_volume(truncated)
    garbage = tmp_path / "garbage.nii"
    garbage.write_bytes(gzip.compress(b"not an image") * 3)
    with pytest.raises(VolumeError, match="garbage.nii"):
        read_volume(garbage)
    with pytest.raises(VolumeError, match=r"four.nii.gz: a 3D volume is needed, got a 4D array"):
        read_volume(write_nifti(tmp_path / "four.nii.gz", np.zeros((4, 4, 4, 2), np.float32)))
    with pytest.raises(VolumeError, match=r"flat.nii.gz: a 3D volume is needed, got a 2D"):
        read_volume(write_nifti(tmp_path / "flat.nii.gz", np.zeros((4, 4), np.float32)))
    nan = np.zeros((4, 4, 4), np.float32)
    nan[1, 1, 1], nan[2, 2, 2] = np.nan, np.inf
    with pytest.raises(VolumeError, match=r"nan.nii.gz: 2 voxel\(s\) are NaN or Inf"):
        read_volume(write_nifti(tmp_path / "nan.nii.gz", nan))
    with pytest.raises(VolumeError, match="label map must hold integer"):
        read_volume(write_nifti(tmp_path / "lab.nii.gz", np.full((4, 4, 4), 0.5, np.float32)), kind="label")
    with pytest.raises(VolumeError, match="no such file"):
        read_volume(tmp_path / "missing.nii.gz")
    # a trailing singleton axis is fine
    assert read_volume(write_nifti(tmp_path / "one.nii.gz", np.zeros((4, 5, 6, 1), np.float32))).shape == (4, 5, 6)


def test_label_grid_mismatch_names_both_files(tmp_path):
    image = read_volume(write_nifti(tmp_path / "img.nii.gz", np.zeros((6, 6, 6), np.float32)))
    label = read_volume(write_nifti(tmp_path / "seg.nii.gz", np.zeros((6, 6, 5), np.uint8)), kind="label")
    with pytest.raises(VolumeError, match=r"seg.nii.gz: label grid .* does not match image .*img.nii.gz"):
        check_same_grid(image, label)
    shifted = read_volume(write_nifti(tmp_path / "seg2.nii.gz", np.zeros((6, 6, 6), np.uint8),
                                      np.diag([1.0, 1, 1, 1]) + np.eye(4, k=3) * 0), kind="label")
    shifted.affine = shifted.affine.copy()
    shifted.affine[0, 3] += 2.0
    with pytest.raises(VolumeError, match="affine does not match"):
        check_same_grid(image, shifted)


def test_resample_changes_spacing_keeps_field_of_view(tmp_path):
    data = np.zeros((20, 20, 10), np.float32)
    data[5:15, 5:15, 2:8] = 100.0
    vol = read_volume(write_nifti(tmp_path / "r.nii.gz", data, np.diag([1.0, 1.0, 2.0, 1.0])))
    out = resample(vol, (2.0, 2.0, 2.0))
    assert out.shape == (10, 10, 10) and out.spacing == pytest.approx((2.0, 2.0, 2.0))
    # voxel edges aligned: the first new voxel's centre sits half a new voxel from the old first voxel's edge
    assert out.affine[0, 3] == pytest.approx(0.5)
    centre_old = vol.affine @ np.r_[(np.array(vol.shape) - 1) / 2, 1]
    centre_new = out.affine @ np.r_[(np.array(out.shape) - 1) / 2, 1]
    np.testing.assert_allclose(centre_old, centre_new, atol=1e-6)
    labels = Volume((data > 0).astype(np.uint8), vol.spacing, vol.affine)
    assert set(np.unique(resample(labels, (2.0, 2.0, 2.0)).array)) == {0, 1}


def _write_dicom_series(directory, volume_hu, spacing=(0.8, 0.9, 2.5), slope=2.0, intercept=-1024.0):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    directory.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    stored = np.rint((volume_hu - intercept) / slope).astype(np.uint16)
    order = np.random.default_rng(0).permutation(volume_hu.shape[2])  # file names not in slice order
    for n, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID = series
        ds.Modality = "CT"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-50.0, -40.0, 100.0 + k * spacing[2]]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # [row spacing, column spacing]
        ds.Rows, ds.Columns = volume_hu.shape[1], volume_hu.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # (rows, columns) = (y, x)
        ds.save_as(directory / f"IM{n:04d}", enforce_file_format=True)


def test_dicom_series_sorted_scaled_and_oriented(tmp_path):
    rng = np.random.default_rng(2)
    hu = (rng.integers(-500, 500, size=(6, 5, 4)) * 2).astype(np.float32)
    _write_dicom_series(tmp_path / "series", hu)
    (tmp_path / "series" / "README.txt").write_text("not dicom")
    vol = read_volume(tmp_path / "series")
    assert vol.spacing == pytest.approx((0.8, 0.9, 2.5))
    # DICOM LPS (x left, y posterior) becomes RAS+: x and y flip, z keeps its order.
    np.testing.assert_array_equal(vol.array, hu[::-1, ::-1, :])
    truncated = tmp_path / "series" / "IM0002"
    truncated.write_bytes(truncated.read_bytes()[:-10])
    with pytest.raises(VolumeError, match="IM0002"):
        read_volume(tmp_path / "series")
    _write_dicom_series(tmp_path / "gap", hu)
    files = sorted((tmp_path / "gap").iterdir())
    import pydicom

    middle = next(f for f in files if float(pydicom.dcmread(f).ImagePositionPatient[2]) == 100.0 + 2.5)
    middle.unlink()
    with pytest.raises(VolumeError, match="gap: slice spacing is not uniform"):
        read_volume(tmp_path / "gap")
