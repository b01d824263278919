"""TFDS builders on tiny files written here in each dataset's real layout; ArrayRecord, no TensorFlow."""

import csv
import sys

import numpy as np
import pytest

from genesis_jax.data.builders import DatasetError, open_split
from genesis_jax.data.metaimage import write_metaimage
from genesis_jax.data.normalize import dequantize_unit, normalize_ct
from genesis_jax.data.phantom import synthetic_ct
from genesis_jax.data.prepare import prepare
from tests.data.helpers import tiny_data_config, write_nifti


def _downstream(tmp_path, builder, manual_dir, **extra):
    from genesis_jax.config_loader import load_config

    variant = {"lits_liver": "lits", "brats18_flair": "brats", "lidc_nodule_crops": "lidc",
               "luna16_candidates": "luna16_candidates"}[builder]
    config = load_config(f"data/downstream:{variant}").data
    config.unlock()
    config.data_dir, config.manual_dir = str(tmp_path / "tfds"), str(manual_dir)
    for key, value in extra.items():
        config[key] = value
    return config


def _phantom_dir(root, n=4, shape=(64, 64, 48)):
    for i in range(n):
        ph = synthetic_ct(shape, seed=i)
        write_nifti(root / f"case{i}" / f"ct{i}.nii.gz", np.rint(ph["image"]).astype(np.int16), np.diag([2.0] * 3 + [1]))
    return root


def test_genesis_cubes_from_a_directory_skips_bad_scans_and_splits_by_scan(tmp_path):
    manual = _phantom_dir(tmp_path / "vols")
    (manual / "broken.nii.gz").write_bytes((manual / "case0" / "ct0.nii.gz").read_bytes()[:200])
    write_nifti(manual / "fourd.nii.gz", np.zeros((40, 40, 40, 3), np.int16))
    write_nifti(manual / "small.nii.gz", np.zeros((10, 10, 10), np.int16))
    nan = np.zeros((40, 40, 40), np.float32)
    nan[3, 3, 3] = np.nan
    write_nifti(manual / "nan.nii.gz", nan)
    (manual / "notes.txt").write_text("ignored")
    config = tiny_data_config(tmp_path, source="directory", manual_dir=str(manual), validation_fraction=0.25,
                              name="dir")
    summary = prepare(config)
    reasons = "\n".join(r for _, r in summary.skipped)
    assert len(summary.skipped) == 4, reasons
    assert "broken.nii.gz" in reasons and "truncated or corrupt" in reasons
    assert "fourd.nii.gz: a 3D volume is needed, got a 4D" in reasons
    assert "small.nii.gz" in reasons and "smaller than the cube" in reasons
    assert "nan.nii.gz: 1 voxel(s) are NaN or Inf" in reasons
    assert summary.scans_read == 5 and summary.bytes_on_disk > 0  # opened: 4 phantoms + the too-small one
    assert "tensorflow" not in sys.modules
    config.storage = "tfds"
    train, val = open_split(config, "train"), open_split(config, "validation")
    train_scans = {train[i]["scan_id"] for i in range(len(train))}
    val_scans = {val[i]["scan_id"] for i in range(len(val))}
    assert train_scans and val_scans and not train_scans & val_scans  # split by scan
    assert len(train) + len(val) == sum(summary.examples.values())
    # a stored cube is the normalised volume at its corner, up to the uint16 step
    example = train[0]
    scan = example["scan_id"].decode()
    ph = synthetic_ct((64, 64, 48), seed=int(scan[-1]))
    x, y, z = example["corner"]
    reference = normalize_ct(np.rint(ph["image"]))[x:x + 16, y:y + 16, z:z + 8]
    np.testing.assert_allclose(dequantize_unit(example["cube"]), reference, atol=1e-5)
    # reopened under other settings: a clear error
    config.cubes.tissue_threshold = 0.5
    with pytest.raises(DatasetError, match="prepared with other settings"):
        open_split(config, "train")


def test_raise_policy_leaves_no_finished_dataset(tmp_path):
    manual = _phantom_dir(tmp_path / "vols", n=2)
    write_nifti(manual / "zz_fourd.nii.gz", np.zeros((40, 40, 40, 3), np.int16))
    config = tiny_data_config(tmp_path, source="directory", manual_dir=str(manual), on_error="raise", name="r")
    with pytest.raises(Exception, match="zz_fourd.nii.gz"):
        prepare(config)
    built = tmp_path / "tfds" / "genesis_cubes" / "r"
    assert not list(built.rglob("dataset_info.json")) and not list(built.glob("incomplete*"))
    config.storage = "tfds"
    with pytest.raises(DatasetError, match="not prepared"):
        open_split(config, "train")


def test_empty_directory_and_missing_manual_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no volumes"):
        prepare(tiny_data_config(tmp_path, source="directory", manual_dir=str(tmp_path / "empty"), name="e"))
    with pytest.raises(DatasetError, match="manual_dir"):
        prepare(tiny_data_config(tmp_path, source="directory", manual_dir="", name="e2"))


def test_synthetic_prepare_matches_in_memory_source(tmp_path):
    from genesis_jax.data.sources import cube_source

    config = tiny_data_config(tmp_path)
    summary = prepare(config)
    assert summary.examples == {"train": 18, "validation": 6} and not summary.skipped
    memory = cube_source(config, "validation")
    config.storage = "tfds"
    stored = cube_source(config, "validation")
    got = sorted(stored[i]["cube"].tobytes() for i in range(len(stored)))
    assert got == sorted(memory[i]["cube"].tobytes() for i in range(len(memory)))
    assert prepare(config).reused


def _luna_layout(root, scans_per_subset=(0, 5, 7)):
    uids = {}
    for k in scans_per_subset:
        ph = synthetic_ct((64, 64, 48), seed=k)
        uid = f"1.3.6.1.4.1.14519.5.2.1.6279.6001.{k}0000"
        write_metaimage(root / f"subset{k}" / f"{uid}.mhd", np.rint(ph["image"]).astype(np.int16),
                        spacing=(2.0, 2.0, 2.5), origin=(-48.0, -48.0, -50.0))
        uids[k] = uid
    return uids


def test_luna16_cubes_published_subset_split(tmp_path):
    _luna_layout(tmp_path / "luna")
    config = tiny_data_config(tmp_path, source="directory", manual_dir=str(tmp_path / "luna"), name="luna")
    config.builder = "luna16_cubes"
    summary = prepare(config)
    assert set(summary.examples) == {"train", "validation", "test"} and summary.scans_read == 3
    config.storage = "tfds"
    assert open_split(config, "test")[0]["scan_id"].decode().startswith("subset7/")


def test_luna16_candidates_crops_at_world_coordinates(tmp_path):
    uids = _luna_layout(tmp_path / "luna")
    rows = [(uids[0], 0.0, 0.0, 0.0, 1), (uids[0], -40.0, 20.0, -10.0, 0), (uids[5], 1.0, 2.0, 3.0, 0),
            (uids[7], 10.0, -6.0, 12.0, 1), ("1.2.3.not.in.any.subset", 0, 0, 0, 0)]
    with open(tmp_path / "luna" / "candidates.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seriesuid", "coordX", "coordY", "coordZ", "class"])
        w.writerows(rows)
    config = _downstream(tmp_path, "luna16_candidates", tmp_path / "luna", crop_shape=(8, 8, 6))
    summary = prepare(config)
    assert summary.examples == {"train": 2, "validation": 1, "test": 1}
    config.storage = "tfds"
    train = open_split(config, "train")
    by_row = {int(train[i]["candidate"]): train[i] for i in range(len(train))}
    assert int(by_row[0]["label"]) == 1 and by_row[0]["image"].shape == (8, 8, 6)
    # world LPS (0, 0, 0) is voxel (24, 24, 20) of the ITK grid (origin -48, -48, -50; spacing 2, 2, 2.5)
    hu = np.rint(synthetic_ct((64, 64, 48), seed=0)["image"]).astype(np.int16)
    itk_crop = normalize_ct(hu)[24 - 4:24 + 4, 24 - 4:24 + 4, 20 - 3:20 + 3]
    canonical = dequantize_unit(by_row[0]["image"])[::-1, ::-1, :]  # RAS crop back to ITK (LPS) index order
    # even sizes and a flipped axis: the RAS crop spans ITK 21..28 where the ITK-order crop spans 20..27
    np.testing.assert_allclose(canonical[:-1, :-1], itk_crop[1:, 1:], atol=1e-5)


def test_lits_layout_index_split_and_label_mapping(tmp_path):
    root = tmp_path / "lits"
    for i in (0, 1, 100, 120):
        ph = synthetic_ct((32, 32, 24), seed=i)
        seg = (ph["label"] == 1).astype(np.uint8)
        seg[ph["label"] == 5] = 2  # call the nodules "lesions"
        batch = "Training Batch 1" if i < 50 else "Training Batch 2"
        write_nifti(root / batch / f"volume-{i}.nii", np.rint(ph["image"]).astype(np.int16))
        write_nifti(root / batch / f"segmentation-{i}.nii", seg)
    write_nifti(root / "Training Batch 1" / "volume-7.nii", np.zeros((8, 8, 8), np.int16))  # no segmentation
    write_nifti(root / "Training Batch 1" / "volume-8.nii", np.zeros((8, 8, 8), np.int16))
    write_nifti(root / "Training Batch 1" / "segmentation-8.nii", np.zeros((8, 8, 7), np.uint8))  # grid mismatch
    config = _downstream(tmp_path, "lits_liver", root)
    summary = prepare(config)
    assert summary.examples == {"train": 2, "validation": 1, "test": 1}
    reasons = " ".join(r for _, r in summary.skipped)
    assert "no segmentation-7" in reasons and "segmentation-8.nii: label grid" in reasons
    config.storage = "tfds"
    example = open_split(config, "validation")[0]
    ph = synthetic_ct((32, 32, 24), seed=100)
    assert example["scan_id"] == b"volume-100" and example["label"].max() == 1
    np.testing.assert_array_equal(example["label"], (ph["label"] == 1).astype(np.uint8))  # lesion -> background


def test_brats_layout_with_published_fold_files(tmp_path):
    root = tmp_path / "MICCAI_BraTS_2018_Data_Training"
    cases = [f"Brats18_TCIA01_{i:03d}_1" for i in range(10)]
    rng = np.random.default_rng(0)
    for i, case in enumerate(cases):
        flair = rng.uniform(0, 500, size=(24, 24, 16)).astype(np.float32)
        seg = np.zeros((24, 24, 16), np.uint8)
        seg[8:12, 8:12, 5:9] = (1, 2, 4)[i % 3]
        grade = "HGG" if i % 2 else "LGG"
        write_nifti(root / grade / case / f"{case}_flair.nii.gz", flair)
        write_nifti(root / grade / case / f"{case}_seg.nii.gz", seg)
        write_nifti(root / grade / case / f"{case}_t1.nii.gz", flair)
    for k, fold in enumerate((cases[:4], cases[4:7], cases[7:]), start=1):
        (root / f"fold_{k}.csv").write_text("\n".join(fold) + "\n")
    config = _downstream(tmp_path, "brats18_flair", root)
    summary = prepare(config)
    assert summary.examples == {"train": 6, "validation": 1, "test": 3}
    config.storage = "tfds"
    test = open_split(config, "test")
    assert {test[i]["scan_id"].decode() for i in range(3)} == set(cases[7:])
    example = test[0]
    assert example["label"].sum() == 64 and example["image"].max() == 65535  # per-patient min-max to [0, 1]


def test_lidc_crops_from_published_npy_files(tmp_path):
    root = tmp_path / "ncs"
    root.mkdir()
    rng = np.random.default_rng(0)
    shape = (8, 8, 4)
    for split, n in (("train", 5), ("valid", 2), ("test", 3)):
        x = rng.uniform(0, 1, size=(n, *shape, 1)).astype(np.float32)
        m = (rng.uniform(size=(n, *shape, 1)) > 0.8).astype(np.float32)
        if split == "test":
            x[1, 0, 0, 0, 0] = 7.0  # not normalised: skipped, named
        np.save(root / f"x_{split}_8x8x4.npy", x)
        np.save(root / f"m_{split}_8x8x4.npy", m)
    config = _downstream(tmp_path, "lidc_nodule_crops", root, crop_shape=(8, 8, 4))
    summary = prepare(config)
    assert summary.examples == {"train": 5, "validation": 2, "test": 2}
    assert "x_test_8x8x4.npy[1]" in summary.skipped[0][1] and "expected [0, 1]" in summary.skipped[0][1]
    config.storage = "tfds"
    train = open_split(config, "train")
    x = np.load(root / "x_train_8x8x4.npy")[..., 0]
    i = int(train[0]["index"])
    np.testing.assert_allclose(dequantize_unit(train[0]["image"]), x[i], atol=1e-5)
    bad = _downstream(tmp_path, "lidc_nodule_crops", root, crop_shape=(16, 16, 8), name="bad")
    with pytest.raises(DatasetError, match="no x_<train|valid|test>_16x16x8.npy"):
        prepare(bad)


def test_a_small_write_buffer_spills_to_disk_without_tensorflow(tmp_path):
    """More data than the buffer: TFDS spills examples to bucket files (TensorFlow is not installed here)."""
    config = tiny_data_config(tmp_path, memory_buffer_mb=0, name="spill")
    summary = prepare(config)
    assert summary.examples == {"train": 18, "validation": 6}
    assert "tensorflow" not in sys.modules
    from tensorflow_datasets.core import shuffle

    assert shuffle.MAX_MEM_BUFFER_SIZE == 1000 << 20  # restored
    config.storage = "tfds"
    assert len(open_split(config, "train")) == 18
