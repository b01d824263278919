"""Sample data: the offline error, the sha256 check, the class map parser, and (when PyPI or the cache has it) the
real TotalSegmentator volumes: shapes, liver voxel counts, and the DICOM series landing on its label's grid."""

import subprocess

import numpy as np
import pytest

from genesis_jax.data import samples
from genesis_jax.data.readers import check_same_grid, read_volume


@pytest.fixture(scope="module")
def real_samples():
    try:
        return samples.fetch_samples()
    except samples.SampleDataUnavailable as err:
        pytest.skip(f"TotalSegmentator sample sdist not available (no PyPI access and not cached): {err}")


def test_offline_failure_says_what_to_do(tmp_path, monkeypatch):
    def no_network(cmd, **kwargs):
        assert cmd[1:4] == ["-m", "pip", "download"] and "TotalSegmentator==2.18.0" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version (network unreachable)")

    monkeypatch.setattr(samples.subprocess, "run", no_network)
    with pytest.raises(samples.SampleDataUnavailable) as err:
        samples.fetch_samples(tmp_path)
    text = str(err.value)
    assert "pip download --no-deps --no-binary :all: TotalSegmentator==2.18.0" in text
    assert str(tmp_path / "downloads") in text and samples.SDIST_SHA256 in text and "synthetic" in text


def test_wrong_checksum_is_removed(tmp_path):
    bad = tmp_path / "downloads" / samples.SDIST_NAME
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not the sdist")
    with pytest.raises(samples.SampleDataUnavailable, match="expected 5d4223ef"):
        samples.fetch_samples(tmp_path)
    assert not bad.exists()


def test_class_map_parser_reads_literal_without_importing():
    source = "import os\nclass_map = {\n 'total': {1: 'spleen', 5: 'liver'},\n 'total_mr': {5: 'liver'}}\nx = 1\n"
    assert samples.parse_class_maps(source)["total"][5] == "liver"
    with pytest.raises(ValueError, match="class_map"):
        samples.parse_class_maps("y = 2\n")


def test_real_samples_shapes_and_liver(real_samples):
    assert set(real_samples) == {"ct_abdomen", "ct_dicom", "ct_chest", "mr_abdomen"}
    expected = {"ct_abdomen": (122, 101, 112), "ct_dicom": (512, 512, 20), "ct_chest": (233, 167, 191),
                "mr_abdomen": (117, 91, 20)}
    for name, shape in expected.items():
        assert sorted(samples.load_sample(name).shape) == sorted(shape)
    assert samples.class_id("ct_abdomen", "liver") == 5
    assert samples.liver_mask("ct_abdomen").sum() == 41_692
    ct = samples.load_sample("ct_abdomen")
    assert 20 < np.median(ct.array[samples.liver_mask("ct_abdomen")]) < 120  # liver in HU
    with pytest.raises(KeyError, match="no class 'liver'"):
        samples.organ_mask("ct_chest", "liver")


def test_real_dicom_series_matches_its_label_grid(real_samples):
    image = read_volume(real_samples["ct_dicom"]["image"])  # JPEG 2000 compressed series
    label = read_volume(real_samples["ct_dicom"]["label"], kind="label")
    check_same_grid(image, label)
    assert image.spacing == pytest.approx((0.9765625, 0.9765625, 2.0))
    liver = label.array == samples.class_id("ct_dicom", "liver")
    assert liver.sum() == 366_708
    assert 40 < np.median(image.array[liver]) < 150 and image.array.min() >= -1024


def test_pyradiomics_chest_cts_when_available():
    try:
        info = samples.fetch_pyradiomics_samples()
    except samples.SampleDataUnavailable as err:
        pytest.skip(f"pyradiomics 3.0.1 sdist not available (no PyPI access and not cached): {err}")
    assert set(info) == {"ct_lung1", "ct_lung2"}
    lung1, lung2 = samples.load_sample("ct_lung1"), samples.load_sample("ct_lung2")
    assert lung1.shape == (512, 512, 48) and lung2.shape == (512, 512, 61)
    assert lung1.spacing == pytest.approx((0.5703125, 0.5703125, 5.0))
    assert lung1.array.min() == -1024 and lung1.array.max() == 3071  # HU, as sample_data.md lists
    assert samples.load_sample_label("ct_lung1").array.sum() == 837
    assert samples.load_sample_label("ct_lung2").array.sum() == 24_644
