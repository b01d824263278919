"""docs/extending.md stays true: every file it names exists, every registry it names is a dict in the module it
says, and a pretext written the way it describes (a module's two functions and one registry line, nothing in
train/) trains one real step through ``pretrain()``, and one that owns a trainable parameter trains and keeps it
without exporting it."""

import importlib
import re
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from genesis_jax.models import build_model
from genesis_jax.models.weights import load_weights
from genesis_jax.pretext import registry
from genesis_jax.pretext.base import Pretext, whole_image
from genesis_jax.train import checkpointing
from genesis_jax.train.loop import config_dict
from genesis_jax.train.mesh import make_mesh
from genesis_jax.train.pretrain import pretrain
from genesis_jax.train.schedules import build_optimizer
from genesis_jax.train.state import abstract_train_state
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


def test_a_pretext_owns_trainable_parameters_the_way_the_doc_says(tmp_path, monkeypatch):
    """A throwaway pretext with its own parameter (a learned intensity offset added to the input) declared as
    ``Pretext.params`` and taken as ``prepare``'s third argument: pretrain() trains and records it, exports none."""

    def build(config, transform=None):
        def prepare(key, batch, params):
            return batch["cube"] + params["offset"], batch["cube"]

        return Pretext(name="offset", prepare=prepare, clean=lambda key, batch, params: (batch["cube"], batch["cube"]),
                       loss=lambda targets, output: jnp.mean((output - targets) ** 2), scored=whole_image,
                       preview_columns=("shifted", "restored", "original"), preview_panels=lambda i, p, t: [i, p, t],
                       params={"offset": np.full((1,), 0.5, np.float32)})

    module = types.SimpleNamespace(build=build, check_config=lambda checker, pretext_config, config: None)
    monkeypatch.setitem(registry.PRETEXTS, "offset", module)
    config = tiny_config("--config.max_steps=2", "--config.pretext.name=offset", "--config.num_devices=1",
                         "--config.precise_bn.num_batches=0")
    summary = pretrain(config, tmp_path)
    assert summary["step"] == 2 and "pretext_params_fingerprint" in summary
    abstract = abstract_train_state(build_model(config.model), build_optimizer(**config_dict(config.optimizer)),
                                    jax.random.key(config.seed), tuple(config.input_shape), make_mesh(1),
                                    task_params={"offset": np.zeros((1,), np.float32)})
    ckpts = checkpointing.TrainCheckpoints(tmp_path)
    try:
        tree, _ = ckpts.restore(abstract.checkpoint_tree())
    finally:
        ckpts.close()
    assert float(np.asarray(tree["task_params"]["offset"])[0]) != 0.5  # trained
    variables = load_weights(tmp_path / "weights")[0]
    assert "offset" not in variables["params"]  # the network's weights alone
