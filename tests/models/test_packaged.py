"""Packaged weights: a weights directory packed to npz + json comes back as an equal weights directory, the
shipped ones carry a passed gate, and the package data is declared so a wheel carries them."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from genesis_jax.models import MODELS, packaged
from genesis_jax.models.weights import ADAPTATION_FILE, CheckpointError, load_weights, save_weights
from genesis_jax.pretext.gate import RECORD_KEY

REPO = Path(__file__).resolve().parents[2]


def test_package_then_materialize_round_trips(tmp_path):
    cfg = dict(MODELS["genesis_unet"].tiny_config)
    rng = np.random.default_rng(0)
    variables = {"params": {"a": {"kernel": rng.normal(size=(3, 3, 2)).astype(np.float32)},
                            "b": {"bias": rng.normal(size=(4,)).astype(np.float32)}},
                 "batch_stats": {"a": {"mean": rng.normal(size=(2,)).astype(np.float32)}}}
    gate = {"passed": True, "restoration_mse": 0.01}
    src = save_weights(tmp_path / "w", variables, cfg, {RECORD_KEY: gate, "workdir": "/somewhere/private"})
    preview = tmp_path / "p.png"
    preview.write_bytes(b"png")
    out_dir = tmp_path / "pkg"
    packaged.package_weights(src, "toy", "a test", preview_png=preview, directory=out_dir)
    info = json.loads((out_dir / "toy.json").read_text())
    assert info["made_by"] == "a test" and "workdir" not in info["metadata"]  # no path of the maker's machine
    assert (out_dir / "toy_preview.png").read_bytes() == b"png"

    monkey_dir = packaged.PACKAGED_DIR
    try:
        packaged.PACKAGED_DIR = out_dir
        assert packaged.available() == ["toy"]
        back = packaged.materialize("toy", tmp_path / "back")
        with pytest.raises(CheckpointError, match="no packaged weights named 'nope'"):
            packaged.materialize("nope", tmp_path / "x")
    finally:
        packaged.PACKAGED_DIR = monkey_dir
    got, got_cfg, meta = load_weights(back)
    assert got_cfg == cfg and meta[RECORD_KEY] == gate and meta["packaged"] == "toy"
    assert (back / ADAPTATION_FILE).is_file()
    for group in variables:
        for layer in variables[group]:
            for name, value in variables[group][layer].items():
                np.testing.assert_array_equal(got[group][layer][name], value)


@pytest.mark.parametrize("name", packaged.available())
def test_shipped_weights_passed_their_gate(name):
    info = packaged.record(name)
    gate = info["metadata"][RECORD_KEY]
    assert gate["passed"] is True
    assert gate["restoration_mse"] <= gate["max_ratio"] * gate["batch_mean_mse"]
    assert gate["clean_identity_mse"] <= gate["max_clean_mse"]
    assert "experiments/" in info["made_by"]  # made by a committed script


def test_package_data_is_declared_for_the_wheel():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["genesis_jax.models"]
    assert {"packaged_weights/*.npz", "packaged_weights/*.json", "packaged_weights/*.png"} <= set(patterns)
