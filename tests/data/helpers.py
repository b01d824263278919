"""Small writers of test files in the real layouts (NIfTI, MetaImage, DICOM) and tiny data configs."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


def tiny_data_config(tmp_path: Path, **overrides):
    """The `:tiny` data config shrunk for tests (64^3 phantoms, 16x16x8 cubes), writing under tmp_path."""
    from genesis_jax.config_loader import load_config

    config = load_config("data/genesis_cubes:tiny").data
    config.unlock()
    config.data_dir = str(tmp_path / "tfds")
    config.synthetic.shape = (64, 64, 64)
    config.synthetic.num_scans = 4
    config.validation_fraction = 0.25
    config.cubes.cube_shape = (16, 16, 8)
    config.cubes.margins = (4, 4, 2)
    config.cubes.cubes_per_scan = 6
    config.cubes.max_attempts = 400
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return config
