"""Fine-tuning augmentation inside the jitted train step: traced once over many steps (chex.assert_max_traces),
seeded from the step's key, on by default for segmentation configs and off for classification."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genesis_jax.config_loader import load_config
from genesis_jax.models import build_model
from genesis_jax.train.finetune_steps import augment_settings, make_prepare
from genesis_jax.train.losses import dice_loss
from genesis_jax.train.mesh import make_mesh
from genesis_jax.train.schedules import build_optimizer
from genesis_jax.train.state import create_train_state
from genesis_jax.transforms.augment import AugmentSettings


def _batches(spatial, count):
    rng = np.random.default_rng(0)
    for _ in range(count):
        image = rng.random((2, *spatial, 1), np.float32)
        yield {"image": jnp.asarray(image), "label": jnp.asarray((image > 0.5).astype(np.float32))}


@pytest.mark.parametrize("ndim, spatial", [(2, (16, 16, 1)), (3, (16, 16, 8))])
def test_augmented_train_step_traces_once(ndim, spatial):
    from genesis_jax.train.steps import make_train_step

    chex.clear_trace_counter()
    prepare = chex.assert_max_traces(make_prepare("segmentation", ndim, AugmentSettings()), n=1)
    mesh = make_mesh(1)
    model = build_model(dict(name="genesis_unet", variant="keras", ndim=ndim, base_width=2, depth=2, num_classes=1))
    input_shape = (16, 16, 1) if ndim == 2 else (16, 16, 8, 1)
    state = create_train_state(model, build_optimizer("adam", 1e-3), jax.random.key(0), input_shape, mesh)
    step = make_train_step(dice_loss, prepare, mesh=mesh, max_traces=1)
    for batch in _batches(spatial, 4):  # new data every step, one trace
        state, metrics = step(state, batch)
        assert bool(metrics["finite"])
    assert int(state.step) == 4


def test_prepare_augments_from_the_key_and_evaluation_does_not():
    batch = next(_batches((16, 16, 8), 1))
    only_mirror = AugmentSettings(rotation_p=0.0, scale_p=0.0, noise_p=0.0, blur_p=0.0, brightness_p=0.0,
                                  contrast_p=0.0, gamma_p=0.0, low_res_p=0.0, mirror_p=1.0)
    train = jax.jit(make_prepare("segmentation", 3, only_mirror))
    evaluate = make_prepare("segmentation", 3)
    x1, y1 = train(jax.random.key(1), batch)
    x1b, _ = train(jax.random.key(1), batch)
    np.testing.assert_array_equal(np.asarray(x1), np.asarray(x1b))
    np.testing.assert_array_equal(np.asarray(x1), np.asarray(batch["image"])[:, ::-1, ::-1, ::-1])
    np.testing.assert_array_equal(np.asarray(y1), np.asarray(batch["label"])[:, ::-1, ::-1, ::-1])
    x0, _ = evaluate(None, batch)
    np.testing.assert_array_equal(np.asarray(x0), np.asarray(batch["image"]))


@pytest.mark.parametrize("spec, on", [("finetune/lcs:tiny", True), ("finetune/liver_sample", True),
                                      ("finetune/unetpp_liver:tiny", True), ("finetune/ncc:tiny", False),
                                      ("finetune/ecc:tiny", False)])
def test_augmentation_defaults(spec, on):
    config = load_config(spec)
    settings = augment_settings(config)
    assert (settings is not None) == on
    assert config.sampling.augment_flips == (not on)  # one of the two mirrors, never both
    if on:  # the HU settings in the data's units: the configs use the published window [-1000, 1000]
        assert settings.brightness_shift == pytest.approx(config.augment.brightness_hu / 2000.0)
    enabled = load_config(spec, ["--config.augment.enabled=True"])
    assert augment_settings(enabled) is not None
