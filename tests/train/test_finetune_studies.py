"""The annotation-efficiency study runs end to end (tiny: synthetic phantoms, 2 label fractions, 1 seed, 2 steps)
and writes its plot and table; the study helpers compute what they say."""

import importlib.util
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from genesis_jax.config_loader import load_config
from genesis_jax.models import build_model
from genesis_jax.models.weights import save_weights

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def _module(name):
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_study_helpers():
    study = _module("_study")
    assert study.mean_sd([1.0, 3.0]) == (2.0, pytest.approx(np.sqrt(2.0)))
    assert study.mean_sd([0.5]) == (0.5, 0.0)
    # curve 0.4 at 5%, 0.8 at 25%: 0.6 is reached half-way, at 15%
    assert study.fraction_to_match([0.05, 0.25, 1.0], [0.4, 0.8, 0.9], 0.6) == pytest.approx(0.15)
    assert study.fraction_to_match([0.05, 1.0], [0.7, 0.9], 0.6) == 0.05
    assert study.fraction_to_match([0.05, 1.0], [0.1, 0.2], 0.6) is None


@pytest.fixture
def restore_jax_cache_config():
    saved = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    yield
    jax.config.update("jax_compilation_cache_dir", saved[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", saved[1])


def test_annotation_efficiency_tiny_end_to_end(tmp_path, capsys, restore_jax_cache_config):
    config = load_config("finetune/lcs:tiny")
    model = build_model(config.model)
    variables = jax.jit(model.init)(jax.random.key(1), np.zeros((1, *config.input_shape), np.float32))
    save_weights(tmp_path / "pretrained", variables, config.model.to_dict())  # stands in for Genesis weights

    study = _module("annotation_efficiency")
    rc = study.main(["--config=finetune/lcs:tiny", f"--init={tmp_path / 'pretrained'}",
                     "--fractions", "0.5", "1.0", "--seeds", "0", "--steps", "2", "--pool-size", "8",
                     f"--workdir={tmp_path / 'runs'}", f"--results={tmp_path / 'results'}"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("annotation_saving: pretrained ")
    raw = json.loads((tmp_path / "results" / "annotation_efficiency.json").read_text())
    assert sorted((r["fraction"], r["arm"]) for r in raw["runs"]) == [
        (0.5, "pretrained"), (0.5, "scratch"), (1.0, "pretrained"), (1.0, "scratch")]
    assert {r["train_examples"] for r in raw["runs"]} == {4, 8}  # half and all of the 8-patch pool
    assert (tmp_path / "results" / "annotation_efficiency.png").stat().st_size > 1000
    table = (tmp_path / "results" / "annotation_efficiency.md").read_text()
    assert "| 50% | 4 |" in table and "| 100% | 8 |" in table
