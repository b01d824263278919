"""docs/extending.md stays true: every file it names exists, every registry it names is a dict in the module it
says, and a pretext written the way it describes (a module's two functions and one registry line, nothing in
train/) trains one real step through ``pretrain()``."""

import importlib
import re
import types
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from genesis_jax.pretext import registry
from genesis_jax.pretext.base import Pretext, whole_image
from genesis_jax.train.pretrain import pretrain
from tests.train.helpers import tiny_config

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "extending.md").read_text(encoding="utf-8")
# registry name -> the module the doc says holds it
REGISTRIES = {"PRETEXTS": "genesis_jax.pretext.registry", "MODELS": "genesis_jax.models.registry",
              "NETWORK_MODULES": "genesis_jax.models.registry",
              "BUILDERS": "genesis_jax.data.builders", "METRICS": "genesis_jax.evaluation.metric_table",
              "DEFAULT_METRICS": "genesis_jax.evaluation.metric_table"}


def test_named_files_exist():
    named = set(re.findall(r"`((?:genesis_jax|tests)/[^`<>]*?)`", DOC))
    assert len(named) >= 15, named
    missing = [p for p in named if not (REPO / p).exists()]
    assert not missing, f"docs/extending.md names files that do not exist: {missing}"


def test_registries_are_where_the_doc_says():
    for name, module in REGISTRIES.items():
        assert f"`{name}`" in DOC, name
        path = module.replace(".", "/")
        assert f"`{path}.py`" in DOC or f"`{path}/__init__.py`" in DOC, (name, path)
        assert isinstance(getattr(importlib.import_module(module), name), (dict, tuple)), (name, module)


def test_a_new_pretext_is_a_module_and_a_registry_line(tmp_path, monkeypatch):
    """A throwaway pretext (invert the intensities, restore them) registered like the doc says trains a step."""

    def build(config, transform=None):
        def prepare(key, batch):
            return 1.0 - batch["cube"], batch["cube"]

        return Pretext(name="invert", prepare=prepare, clean=lambda key, batch: (batch["cube"], batch["cube"]),
                       loss=lambda targets, output: jnp.mean(jnp.abs(output - targets)), scored=whole_image,
                       preview_columns=("inverted", "restored", "original"),
                       preview_panels=lambda i, p, t: [i, p, t])

    module = types.SimpleNamespace(build=build, check_config=lambda checker, pretext_config, config: None)
    monkeypatch.setitem(registry.PRETEXTS, "invert", module)
    config = tiny_config("--config.max_steps=1", "--config.pretext.name=invert", "--config.num_devices=1",
                         "--config.precise_bn.num_batches=0")
    summary = pretrain(config, tmp_path)
    assert summary["step"] == 1 and np.isfinite(summary["final_loss"]) and summary["pretext"] == "invert"
    assert summary["pretext_gate"]["scored"] == "all voxels"
