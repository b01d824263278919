"""Fine-tuning data adapters: nested label subsets, joint flips, crops and candidates around a target, test volumes."""

import numpy as np
import pytest

from genesis_jax.data.normalize import quantize_unit
from genesis_jax.data.sources import ArraySource
from genesis_jax.data.task_data import (
    LabelledVolume,
    Subset,
    as_labelled_volume,
    flip_transform,
    label_subset,
    target_crops,
)


def test_label_subsets_are_seeded_and_nested():
    source = ArraySource(image=np.arange(40), label=np.arange(40))
    small, large = label_subset(source, 0.1, seed=3), label_subset(source, 0.25, seed=3)
    assert len(small) == 4 and len(large) == 10  # ceil(fraction * N)
    assert set(small.indices) <= set(large.indices)
    assert label_subset(source, 0.1, seed=3).indices == small.indices
    assert label_subset(source, 0.1, seed=4).indices != small.indices
    assert label_subset(source, 1.0) is source
    assert len(label_subset(source, 0.001)) == 1  # never empty
    assert isinstance(small, Subset) and small[0]["image"] == small.indices[0]
    with pytest.raises(ValueError, match="label_fraction"):
        label_subset(source, 0.0)


def test_flip_transform_flips_image_and_mask_together():
    image = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2, 1)
    example = {"image": image, "label": (image > 10).astype(np.int32)}
    seen = set()
    for seed in range(16):
        out = flip_transform(example, np.random.default_rng(seed))
        np.testing.assert_array_equal(out["label"], (out["image"] > 10).astype(np.int32))
        seen.add(out["image"].tobytes())
    assert len(seen) > 4  # several of the 8 flip combinations occur
    cls = flip_transform({"image": image, "label": np.int32(1)}, np.random.default_rng(0))
    assert cls["label"] == 1  # a class label is left alone


def test_crops_and_candidates_around_the_target():
    label = np.zeros((20, 20, 10), np.uint8)
    label[8:12, 8:12, 4:6] = 1
    image = np.where(label, 0.8, 0.5).astype(np.float32)
    vol = LabelledVolume(image, label, "v")
    crops = target_crops([vol], (8, 8, 4), per_volume=3, seed=0, candidates=False)
    assert len(crops) == 3 and crops[0]["image"].shape == (8, 8, 4)
    assert all(crops[i]["label"][4, 4, 2] == 1 for i in range(3))  # centred on a target voxel
    cands = target_crops([vol], (8, 8, 4), per_volume=3, seed=0, candidates=True)
    assert [int(cands[i]["label"]) for i in range(6)] == [1, 1, 1, 0, 0, 0]
    assert all(cands[i]["image"][4, 4, 2] == pytest.approx(0.5) for i in range(3, 6))  # negatives off the target


def test_volume_elements_become_test_volumes():
    image = np.random.default_rng(0).random((6, 5, 4)).astype(np.float32)
    element = {"image": quantize_unit(image), "label": np.ones((6, 5, 4), np.uint8) * 3, "scan_id": b"scan7",
               "spacing": np.array([2.0, 2.0, 3.0], np.float32)}
    vol = as_labelled_volume(element)
    assert vol.name == "scan7" and vol.label.max() == 1 and vol.spacing == (2.0, 2.0, 3.0)
    np.testing.assert_allclose(vol.image, image, atol=1e-4)  # uint16 storage, de-quantised
    np.testing.assert_array_equal(vol.affine, np.diag([2.0, 2.0, 3.0, 1.0]))  # no affine stored: from the spacing
    with pytest.raises(ValueError, match="grids differ"):
        LabelledVolume(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))
