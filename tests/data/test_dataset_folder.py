"""Dataset folders (nnU-Net v2 raw and images/ + labels/): reading and its one-line errors, labels chosen by name,
the split file written once and honoured when edited, the recorded settings, cubes that fit small scans, and an
empty split named with its fix."""

import json
from pathlib import Path

import numpy as np
import pytest

from genesis_jax.config_loader import ConfigError, load_config
from genesis_jax.data.builders import DatasetError
from genesis_jax.data.cubes import CubeExtractionError, extract_cubes, fitted_margins
from genesis_jax.data.dataset_flag import finetune_with_dataset, label_from_weights, pretrain_with_dataset
from genesis_jax.data.folder_prepare import cube_data_block, prepare_folder
from genesis_jax.data.folders import label_table, load_record, read_folder
from genesis_jax.data.prepare import prepare
from genesis_jax.data.sources import volume_source
from tests.data.dataset_folder import LABELS, tiny_case, write_nnunet_dataset
from tests.data.helpers import write_nifti


def _data_config(folder: Path, cache: Path):
    data = load_config("data/dataset").data
    data.unlock()
    data.manual_dir, data.data_dir = str(folder), str(cache)
    return data


def test_an_nnunet_folder_is_read_with_its_channels_labels_and_test_images(tmp_path):
    folder = read_folder(write_nnunet_dataset(tmp_path / "Dataset002_X", num_training=3, num_test=2))
    assert folder.layout == "nnunet" and folder.labels == LABELS and folder.modality() == "ct"
    assert [c.case_id for c in folder.cases if c.part == "Ts"] == ["case_003", "case_004"]
    assert folder.labelled == ["case_000", "case_001", "case_002"] and folder.num_training == 3
    assert folder.cases[0].images[0].name == "case_000_0000.nii.gz"


def test_a_plain_images_labels_folder_gets_label_names_from_the_maps(tmp_path):
    image, label = tiny_case(0)
    write_nifti(tmp_path / "plain/images/a_0000.nii.gz", image)
    write_nifti(tmp_path / "plain/labels/a.nii.gz", label)
    write_nifti(tmp_path / "plain/images/b.nii.gz", image)  # no label map, no channel suffix: unlabelled
    folder = read_folder(tmp_path / "plain")
    assert folder.layout == "plain" and folder.labels == {"background": 0, "label_1": 1, "label_2": 2}
    assert folder.labelled == ["a"] and [c.case_id for c in folder.cases] == ["a", "b"]


@pytest.mark.parametrize("damage, message", [
    (lambda root: (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": LABELS})),
     "dataset.json: missing field 'file_ending'"),
    (lambda root: (root / "dataset.json").write_text(json.dumps(dict(channel_names={"0": "CT"}, file_ending=".tif",
                                                                      labels=LABELS))),
     "file_ending '.tif' has no reader"),
    (lambda root: (root / "dataset.json").write_text(json.dumps(dict(channel_names={"0": "CT"}, file_ending=".nii.gz",
                                                                      labels={"liver": 1}))),
     "labels has no background"),
    (lambda root: (root / "labelsTr/case_009.nii.gz").write_bytes(b"x"), "case_009.nii.gz: a label map without"),
    (lambda root: (root / "imagesTr/case_000_0000.nii.gz").rename(root / "imagesTr/case_000_0001.nii.gz"),
     "case 'case_000' lacks channel file(s) case_000_0000.nii.gz"),
])
def test_a_broken_folder_is_one_line_naming_the_file_or_field(tmp_path, damage, message):
    root = write_nnunet_dataset(tmp_path / "D", num_training=2, num_test=0)
    damage(root)
    with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        read_folder(root)


def test_labels_are_chosen_by_name_binary_region_subset_or_all():
    labels = {"background": 0, "liver": 1, "tumour": 2, "vessel": 3, "liver+tumour": [1, 2]}
    table, classes = label_table(labels, "tumour")
    assert classes == {"background": 0, "tumour": 1} and table[[0, 1, 2, 3]].tolist() == [0, 0, 1, 0]
    table, classes = label_table(labels, "liver+tumour")
    assert table[[0, 1, 2, 3]].tolist() == [0, 1, 1, 0]
    table, classes = label_table(labels, "vessel,liver")
    assert classes == {"background": 0, "vessel": 1, "liver": 2} and table[[0, 1, 2, 3]].tolist() == [0, 2, 0, 1]
    table, classes = label_table(labels, "")
    assert classes == {"background": 0, "liver": 1, "tumour": 2, "vessel": 3} and table[3] == 3
    with pytest.raises(DatasetError, match="no label 'spleen' in this dataset; it has liver, tumour, vessel"):
        label_table(labels, "spleen")
    with pytest.raises(DatasetError, match="is a region"):
        label_table(labels, "liver+tumour,vessel")
    assert label_from_weights({"labels": {"tumour": 2, "background": 0, "liver": 1}}) == "liver,tumour"


def test_the_split_file_is_written_once_honoured_when_edited_and_the_settings_recorded(tmp_path):
    root = write_nnunet_dataset(tmp_path / "Dataset003_S", num_training=4, num_test=1)
    summary, record = prepare_folder(_data_config(root, tmp_path / "tfds"))
    split_path = Path(record["split_file"])
    split = json.loads(split_path.read_text())
    assert summary.split_scans["validation"] == split["validation"] and len(split["validation"]) == 1
    assert record["data"]["modality"] == "ct" and record["splits"]["unlabelled"] == ["case_004"]
    assert any("split:" in line and str(split_path) in line for line in summary.lines())

    edited = {"train": ["case_000", "case_001"], "validation": ["case_002", "case_003"], "test": []}
    split_path.write_text(json.dumps(edited))
    again, record = prepare_folder(_data_config(root, tmp_path / "tfds"))
    assert not again.reused and any("changed since the last prepare" in n for n in again.notes)
    assert again.split_scans["validation"] == ["case_002", "case_003"]
    assert prepare_folder(_data_config(root, tmp_path / "tfds"))[0].reused

    # a labelled case added to the folder: rebuilt, pre-training only until the split file lists it
    image, label = tiny_case(7)
    write_nifti(root / "imagesTr/case_007_0000.nii.gz", image, np.diag([1.5, 1.5, 2.0, 1.0]))
    write_nifti(root / "labelsTr/case_007.nii.gz", label, np.diag([1.5, 1.5, 2.0, 1.0]))
    added, record = prepare_folder(_data_config(root, tmp_path / "tfds"))
    assert not added.reused and sorted(added.split_scans["unlabelled"]) == ["case_004", "case_007"]
    assert any("1 labelled case(s) are in no split" in n and "case_007" in n for n in added.notes)

    # later commands read the record: the folder or its name, no data override
    assert load_record(str(root), str(tmp_path / "tfds"))["splits"]["validation"] == ["case_002", "case_003"]
    config = load_config("finetune/dataset:tiny")
    config.data.data_dir = str(tmp_path / "tfds")
    config = finetune_with_dataset(config, str(root), "spleen")
    assert config.model.num_classes == 1 and config.sampling.splits.test == "validation"
    validation = volume_source(config.data, "validation")
    assert len(validation) == 2 and set(np.unique(validation[0]["label"])) == {0, 1}
    assert load_record("Dataset003_S", str(tmp_path / "tfds"))["folder"] == str(root.resolve())
    with pytest.raises(DatasetError, match="not prepared"):
        load_record("Dataset999_None", str(tmp_path / "tfds"))


def test_a_dataset_config_without_dataset_or_a_label_without_dataset_is_refused():
    with pytest.raises(ConfigError, match="add --dataset=DIR"):
        finetune_with_dataset(load_config("finetune/dataset:tiny"), None, None)
    with pytest.raises(ConfigError, match="add --dataset=DIR"):
        pretrain_with_dataset(load_config("pretrain/dataset:tiny"), None)
    with pytest.raises(ConfigError, match="--label needs --dataset"):
        finetune_with_dataset(load_config("finetune/lcs:tiny"), None, "liver")


def test_margins_adapt_to_a_small_scan_and_a_scan_smaller_than_the_cube_names_the_field():
    volume = np.random.default_rng(0).uniform(0.3, 1.0, (80, 80, 40)).astype(np.float32)
    assert fitted_margins(volume.shape, (64, 64, 32), (100, 100, 30), 0) == (7, 7, 3)
    with pytest.raises(CubeExtractionError, match="smaller than the cube"):
        extract_cubes(volume, cube_shape=(64, 64, 32), margins=(100, 100, 30), criterion="foreground")
    cubes = extract_cubes(volume, cube_shape=(64, 64, 32), margins=(100, 100, 30), criterion="foreground",
                          adapt_margins=True, cubes_per_scan=4)
    assert cubes.shape == (4, 64, 64, 32)


def test_an_empty_validation_split_is_named_with_its_fix(tmp_path):
    root = write_nnunet_dataset(tmp_path / "Dataset004_E", num_training=3, num_test=0)
    image, label = tiny_case(9, shape=(12, 12, 8))  # smaller than a 16x16x8 cube with its look-ahead
    write_nifti(root / "imagesTr/case_000_0000.nii.gz", image, np.diag([1.5, 1.5, 2.0, 1.0]))
    write_nifti(root / "labelsTr/case_000.nii.gz", label, np.diag([1.5, 1.5, 2.0, 1.0]))
    split_path = tmp_path / "tfds/datasets/Dataset004_E/splits.json"
    split_path.parent.mkdir(parents=True)
    split_path.write_text(json.dumps({"train": ["case_001", "case_002"], "validation": ["case_000"]}))
    _, record = prepare_folder(_data_config(root, tmp_path / "tfds"))
    with pytest.raises(DatasetError) as err:
        prepare(cube_data_block(record, load_config("pretrain/dataset:tiny").data.cubes.to_dict()))
    message = str(err.value)
    assert "the 'validation' split got no example" in message and "validation_fraction" in message
    assert str(split_path) in message and "case_000" in message and "config.data.cubes.cube_shape" in message
