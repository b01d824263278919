"""Every pre-training config: the full-size train step of its pretext is shape-checked with jax.eval_shape (nothing
runs), and the 2D tiny variant trains for real through the CLI."""

import json

import jax
import numpy as np
import pytest
from PIL import Image

from genesis_jax.cli import main
from genesis_jax.config_loader import load_config
from genesis_jax.models import build_model
from genesis_jax.train.mesh import make_mesh, resolve_batch_size
from genesis_jax.pretext import build_pretext
from genesis_jax.train.schedules import build_optimizer
from genesis_jax.train.state import abstract_train_state
from genesis_jax.train.steps import make_train_step
from tests.train.helpers import TINY_OVERRIDES, noise_transform

SPECS = ["genesis_chest_ct", "genesis_chest_ct:keras,step,bf16", "genesis_2d", "unetpp", "unetpp:2d", "dataset", "mim",
         "mim:keras,2d", "mim:unetpp", "genesis_mim", "genesis_mim:unetpp,2d"]


@pytest.mark.parametrize("spec", SPECS)
def test_full_size_step_shapes(spec):
    config = load_config(f"pretrain/{spec}")
    mesh = make_mesh()
    model = build_model(config.model)
    tx = build_optimizer(**config.optimizer.to_dict())
    state = abstract_train_state(model, tx, jax.random.key(0), tuple(config.input_shape), mesh)
    batch = resolve_batch_size(mesh, config.per_device_batch_size, config.global_batch_size)
    cubes = {"cube": jax.ShapeDtypeStruct((batch, *config.data.cubes.cube_shape, 1), np.float32)}
    pretext = build_pretext(config, noise_transform)
    step = make_train_step(pretext.loss, pretext.prepare, mesh=mesh, apply_kwargs=dict(config.apply_kwargs))
    new_state, metrics = jax.eval_shape(step, state, cubes)
    assert metrics["loss"].shape == () and new_state.step.shape == ()
    assert jax.tree.map(lambda a: a.shape, new_state.params) == jax.tree.map(lambda a: a.shape, state.params)


def test_bad_option_is_named():
    with pytest.raises(Exception, match="unknown option"):
        load_config("pretrain/genesis_chest_ct:huge")


def test_cli_trains_genesis_2d_tiny_with_the_published_deformations(tmp_path, capsys):
    """The whole CLI path with the real on-device transforms (3D deformations, then one axial slice per sample)."""
    rc = main(["pretrain", "--config=pretrain/genesis_2d:tiny", f"--workdir={tmp_path}", *TINY_OVERRIDES[1:],
               "--config.max_steps=4", "--config.global_batch_size=16", "--config.logging.preview_every_steps=4"])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("pretrain completed: step 4"), out  # one human line
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["step"] == 4 and np.isfinite(summary["final_loss"]) and summary["weights"]
    with Image.open(summary["preview"]) as im:  # titles, 4 + 1 clean rows x (input | restored | original), a note
        assert im.size[0] == 4 * (3 * 16 + 4) and im.size[1] > 4 * (5 * 16 + 8)
