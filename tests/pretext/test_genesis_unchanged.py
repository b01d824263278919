"""Genesis restoration as a plug-in pretext is the computation pre-training ran before: on a fixed seed, the
pretext path (``pretrain()`` choosing ``config.pretext.name``, or a config without a ``pretext`` block) gives
bit-identical losses and the same parameter fingerprint as the original code path, replayed here by direct calls
to the published deformations (genesis_jax.transforms.restoration_batch), the axial slice and ``mse_loss``."""

import dataclasses
import functools

import jax
import numpy as np
import pytest

from genesis_jax import transforms
from genesis_jax.data.pipeline import global_batch, pretrain_dataset
from genesis_jax.models import build_model
from genesis_jax.pretext import build_pretext, pretext_name
from genesis_jax.train.loop import config_dict, params_fingerprint
from genesis_jax.train.losses import mse_loss
from genesis_jax.train.mesh import batch_sharding, make_mesh, resolve_batch_size
from genesis_jax.train.metrics_log import read_metrics
from genesis_jax.train.pretrain import pretrain
from genesis_jax.train.schedules import build_optimizer
from genesis_jax.train.state import create_train_state
from genesis_jax.train.steps import make_train_step
from tests.train.helpers import tiny_config

STEPS = 3


def cubes(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, 16, 16, 8)).astype(np.float32)


def original_prepare(transforms_config, slice_2d: bool):
    """The pre-pretext ``make_restoration_prepare``/``default_transform`` of train/pretrain.py, written out: Genesis
    2D takes one axial slice per sample first and deforms it as a 2D image (``spatial_dims=2``)."""
    settings = transforms.settings_from_config(transforms_config or None)
    if slice_2d:
        settings = dataclasses.replace(settings, spatial_dims=2)
    transform = functools.partial(transforms.restoration_batch, config=settings)

    def prepare(key, batch):
        transform_key, slice_key = jax.random.split(key)
        cubes = batch["cube"]
        if slice_2d:
            z = jax.random.randint(slice_key, (cubes.shape[0],), 0, cubes.shape[3])
            take = jax.vmap(lambda volume, i: jax.lax.dynamic_index_in_dim(volume, i, axis=2, keepdims=False))
            cubes = take(cubes, z)
        return transform(transform_key, cubes)

    return prepare


def original_run(config, train_cubes) -> tuple[list[float], str]:
    """The loop's training path for STEPS steps with the original prepare and loss: (losses, fingerprint)."""
    mesh = make_mesh(config.get("num_devices"))
    batch = resolve_batch_size(mesh, config.get("per_device_batch_size"), config.get("global_batch_size"))
    key = jax.random.key(config.seed, impl=config.get("prng_impl") or None)
    state = create_train_state(build_model(config.model), build_optimizer(**config_dict(config.optimizer)), key,
                               tuple(config.input_shape), mesh)
    step = make_train_step(mse_loss, original_prepare(config.get("transforms"), bool(config.slice_2d)), mesh=mesh)
    it = iter(pretrain_dataset(train_cubes, batch_size=batch, seed=config.seed))
    losses = []
    for _ in range(STEPS):
        state, metrics = step(state, global_batch(next(it), batch_sharding(mesh)))
        losses.append(float(metrics["loss"]))
    return losses, params_fingerprint(state.params)


@pytest.mark.parametrize("spec,legacy", [("pretrain/genesis_chest_ct:tiny", False),
                                         ("pretrain/genesis_2d:tiny", True)], ids=["3d", "2d_legacy_config"])
def test_genesis_pretext_is_bit_identical_to_the_original_path(spec, legacy, tmp_path):
    from genesis_jax.config_loader import load_config

    config = load_config(spec, ["--config.model.base_width=2", "--config.global_batch_size=8",
                                f"--config.max_steps={STEPS}", "--config.steps_per_epoch=100",
                                "--config.validation_batches=1", "--config.logging.progress=False",
                                "--config.logging.tensorboard=False", "--config.logging.preview_every_steps=0",
                                "--config.precise_bn.num_batches=0", "--config.num_devices=1"])
    if legacy:  # a config written before pretexts were plug-ins: no pretext block, Genesis restoration
        with config.unlocked():
            del config.pretext
    assert pretext_name(config) == "genesis"
    train_cubes, val_cubes = cubes(16, 0), cubes(8, 1)
    want_losses, want_fingerprint = original_run(config, train_cubes)
    summary = pretrain(config, tmp_path, train_source=train_cubes, val_source=val_cubes)
    got = [r["loss"] for r in read_metrics(tmp_path)]
    assert got == want_losses  # bit-identical (the CSV keeps float32 values exactly)
    assert summary["params_fingerprint"] == want_fingerprint


def test_unknown_pretext_is_named():
    config = tiny_config("--config.pretext.name=jigsaw")
    with pytest.raises(ValueError, match="config.pretext.name='jigsaw'"):
        build_pretext(config)
