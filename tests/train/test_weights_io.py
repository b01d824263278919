"""The weights directory format shared by export, conversion and --init."""

import jax
import numpy as np
import pytest

from genesis_jax.models import build_model
from genesis_jax.models.weights import CheckpointError, load_weights, save_weights


def test_save_and_load_roundtrip(tmp_path):
    cfg = {"name": "genesis_unet", "variant": "keras", "base_width": 2, "depth": 2}
    model = build_model(cfg)
    x = np.zeros((1, 4, 4, 4, 1), np.float32)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    out = save_weights(tmp_path / "w", variables, cfg, {"source": "test"})
    restored, restored_cfg, meta = load_weights(out)
    assert restored_cfg == cfg and meta == {"source": "test"}
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, variables), restored)


def test_missing_or_foreign_directory_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_weights(tmp_path / "absent")
    (tmp_path / "other").mkdir()
    with pytest.raises(CheckpointError, match="not a genesis_jax weights directory"):
        load_weights(tmp_path / "other")
