"""NRRD reader: round trips (raw and gzip), LPS geometry to RAS, and bad files named in one line before anything
large is allocated (truncated data, a header claiming more voxels than the gzip data hold, foreign files)."""

import gzip

import numpy as np
import pytest

from genesis_jax.data.errors import VolumeError
from genesis_jax.data.nrrd import read_nrrd, write_nrrd
from genesis_jax.data.readers import read_volume


@pytest.mark.parametrize("gzip_data", [True, False])
@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
def test_round_trip_keeps_voxels_and_axes(tmp_path, gzip_data, dtype):
    array = (np.arange(5 * 4 * 3).reshape(5, 4, 3) - 20).astype(dtype)
    path = write_nrrd(tmp_path / "v.nrrd", array, spacing=(0.5, 0.75, 2.0), origin=(-10.0, 20.0, 30.0),
                      gzip_data=gzip_data)
    got, affine = read_nrrd(path)
    np.testing.assert_array_equal(got, array)
    # LPS on disk -> RAS affine: x and y flip sign, z keeps it; spacing on the diagonal
    np.testing.assert_allclose(affine[:3, :3], np.diag([-0.5, -0.75, 2.0]))
    np.testing.assert_allclose(affine[:3, 3], [10.0, -20.0, 30.0])


def test_read_volume_brings_nrrd_to_canonical(tmp_path):
    array = np.zeros((6, 5, 4), np.int16)
    array[0, 0, 0] = 100  # voxel (0, 0, 0) is the patient's right-posterior corner in LPS index order
    path = write_nrrd(tmp_path / "ct.nrrd", array, spacing=(1.0, 1.0, 3.0))
    volume = read_volume(path)
    assert volume.spacing == pytest.approx((1.0, 1.0, 3.0))
    assert np.all(np.diag(volume.affine)[:3] > 0)  # RAS+
    # x flipped: the marked voxel moves to the far end of x and of y, z unchanged
    assert volume.array[5, 4, 0] == 100


def test_truncated_gzip_data_named(tmp_path):
    path = write_nrrd(tmp_path / "cut.nrrd", np.ones((8, 8, 8), np.int16))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 20])
    with pytest.raises(VolumeError, match="cut.nrrd"):
        read_nrrd(path)


def test_header_claiming_more_than_the_data_is_refused_without_allocating(tmp_path):
    # a tiny file whose header claims 8 GiB: refused from the data it holds, not by allocating the claim
    header = ("NRRD0004\ntype: short\ndimension: 3\nsizes: 2048 2048 1024\nencoding: gzip\n"
              "space directions: (1,0,0) (0,1,0) (0,0,1)\n\n").encode()
    path = tmp_path / "liar.nrrd"
    path.write_bytes(header + gzip.compress(b"\0" * 1000))
    with pytest.raises(VolumeError, match="liar.nrrd.*hold 1,000"):
        read_nrrd(path)
    raw_path = tmp_path / "liar_raw.nrrd"
    raw_path.write_bytes(header.replace(b"gzip", b"raw") + b"\0" * 1000)
    with pytest.raises(VolumeError, match="liar_raw.nrrd.*holds 1,000"):
        read_nrrd(raw_path)


@pytest.mark.parametrize("content, message", [
    (b"P3 not an nrrd", "no NRRD000N magic"),
    (b"NRRD0004\ntype: short\ndimension: 3\nsizes: 2 2 2\n", "no terminating empty line"),
    (b"NRRD0004\ntype: quaternion\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n\n", "unsupported NRRD type"),
    (b"NRRD0004\ntype: short\ndimension: 3\nsizes: 2 2 2\nencoding: bzip2\n\n" + b"\0" * 16, "encoding 'bzip2'"),
    (b"NRRD0004\ntype: short\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n"
     b"space directions: (0,0,0) (0,1,0) (0,0,1)\n\n" + b"\0" * 16, "degenerate"),
])
def test_bad_headers_are_one_line_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.nrrd"
    path.write_bytes(content)
    with pytest.raises(VolumeError, match=message) as err:
        read_volume(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
