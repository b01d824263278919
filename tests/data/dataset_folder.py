"""A tiny nnU-Net v2 raw dataset written with nibabel: CT-like bodies with two labelled organs, for the tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.data.helpers import write_nifti

LABELS = {"background": 0, "liver": 1, "spleen": 2}


def tiny_case(seed: int, shape=(24, 24, 20)) -> tuple[np.ndarray, np.ndarray]:
    """(HU image int16, label uint8): air around an ellipsoid body (40 HU) holding a liver (1) and a spleen (2)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    body = (grid[0] ** 2 / 0.8 + grid[1] ** 2 / 0.7 + grid[2] ** 2 / 1.2) < 1
    shift = rng.uniform(-0.1, 0.1, 3)[:, None, None, None]
    liver = np.sum((grid - shift - np.array([-0.3, 0.0, 0.0])[:, None, None, None]) ** 2, 0) < 0.15
    spleen = np.sum((grid - shift - np.array([0.4, 0.1, 0.0])[:, None, None, None]) ** 2, 0) < 0.06
    image = np.where(body, 40.0, -1000.0) + np.where(liver, 60.0, 0.0) + np.where(spleen, 110.0, 0.0)
    image += rng.normal(0, 10, shape)
    label = np.zeros(shape, np.uint8)
    label[liver & body] = 1
    label[spleen & body] = 2
    return image.astype(np.int16), label


def write_nnunet_dataset(root: Path, num_training: int = 4, num_test: int = 1, shape=(24, 24, 20)) -> Path:
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    for i in range(num_training + num_test):
        image, label = tiny_case(i, shape)
        part = "Tr" if i < num_training else "Ts"
        write_nifti(root / f"images{part}" / f"case_{i:03d}_0000.nii.gz", image, affine)
        if part == "Tr":
            write_nifti(root / "labelsTr" / f"case_{i:03d}.nii.gz", label, affine)
    (root / "dataset.json").write_text(json.dumps(dict(channel_names={"0": "CT"}, labels=LABELS,
                                                       numTraining=num_training, file_ending=".nii.gz")))
    return root
