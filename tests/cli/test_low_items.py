"""The low-severity inputs of issue 16, at the library level: damaged DICOM slices are named, a series whose first
files are not DICOM is found, a lying NIfTI header is refused before allocating, a constant volume is warned
about, convert refuses NaN and integer weights, AL files get the umask's permissions, a resume with another seed
warns."""

from __future__ import annotations

import gzip
import logging
import os
import stat

import nibabel as nib
import numpy as np
import pytest

from genesis_jax.data.readers import VolumeError, read_volume
from tests.data.test_readers import _write_dicom_series


def _series(tmp_path):
    hu = (np.random.default_rng(0).integers(-500, 500, size=(6, 5, 4)) * 2).astype(np.float32)
    _write_dicom_series(tmp_path / "series", hu)
    return tmp_path / "series"


def test_truncated_dicom_slice_is_named_not_dropped(tmp_path):
    series = _series(tmp_path)
    last = max(series.iterdir())
    last.write_bytes(last.read_bytes()[:400])  # DICM marker intact, pixel data cut off
    with pytest.raises(VolumeError, match=last.name):
        read_volume(series)


def test_series_found_when_its_first_files_are_not_dicom(tmp_path):
    from genesis_jax.data.builders.base import discover_volumes

    series = _series(tmp_path)
    for n in range(4):
        (series / f"000_notes_{n}.txt").write_text("not an image")
    assert discover_volumes(tmp_path) == [series]


def test_lying_nifti_header_refused_before_reading(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape((1024, 1024, 512))  # 1 GiB claimed
    for name, data in (("a.nii", header.binaryblock + bytes(48)), ("b.nii.gz", gzip.compress(header.binaryblock))):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(VolumeError, match=rf"{name}: the header describes \(1024, 1024, 512\)"):
            read_volume(tmp_path / name)


def test_constant_volume_is_warned_about(tmp_path, caplog):
    nib.save(nib.Nifti1Image(np.full((8, 8, 8), 7, np.int16), np.eye(4)), tmp_path / "flat.nii.gz")
    with caplog.at_level(logging.WARNING, logger="genesis_jax"):
        read_volume(tmp_path / "flat.nii.gz")
    assert "flat.nii.gz: every voxel is 7" in caplog.text


@pytest.mark.parametrize("damage", ["nan", "int64"])
def test_convert_refuses_nan_and_integer_weights(tmp_path, damage):
    torch = pytest.importorskip("torch")
    from genesis_jax.interop import InteropError, read_pytorch
    from tests.interop.torch_unet3d import UNet3D

    state = UNet3D(width=2).state_dict()
    key = "down_tr64.ops.0.conv1.weight"
    state[key] = state[key].fill_(float("nan")) if damage == "nan" else state[key].to(torch.int64)
    torch.save(state, tmp_path / "w.pt")
    expected = r"\d+ NaN/Inf value" if damage == "nan" else "dtype int64"
    with pytest.raises(InteropError, match=rf"w\.pt: '{key}' has {expected}"):
        read_pytorch(tmp_path / "w.pt")


def test_al_files_get_the_umask_permissions(tmp_path):
    from genesis_jax.active import state as st

    path = st.atomic_write_text(tmp_path / "x.json", "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_resume_with_another_seed_warns(caplog):
    from genesis_jax.train.config_checks import warn_changed_settings

    with caplog.at_level(logging.WARNING, logger="genesis_jax"):
        assert warn_changed_settings({"seed": 0, "global_batch_size": 8}, {"seed": 1, "global_batch_size": 8},
                                     "W") == ["seed"]
        assert warn_changed_settings({"seed": 0}, {"seed": 0}, "W") == []
    assert "W: resuming with changed seed" in caplog.text


def test_stale_incomplete_builds_are_removed(tmp_path):
    from genesis_jax.data.prepare import remove_stale_builds

    dataset = tmp_path / "genesis_cubes" / "tiny" / "1.0.0"
    stale = tmp_path / "genesis_cubes" / "tiny" / "incomplete.AB12CD_1.0.0"
    other = tmp_path / "genesis_cubes" / "tiny" / "incomplete.ZZ99ZZ_2.0.0"  # another version's: not ours
    (stale / "shard").mkdir(parents=True)
    other.mkdir()
    assert remove_stale_builds(dataset) == [stale]
    assert not stale.exists() and other.exists()
