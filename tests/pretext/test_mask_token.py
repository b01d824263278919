"""The learned mask token of the masking pretexts (``config.pretext.mask_fill='token'``): one value per input
channel that fills the masked voxels on the device, receives gradient through the train step and is updated by the
network's optimiser, no retrace, what the evaluation steps (and so the previews) show, 2D and 3D; a state without
task parameters checkpoints exactly the fields it did before; an unknown fill is named in one line, and so is a
resume under the other fill (the checkpoints kept)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genesis_jax.config_loader import ConfigError, load_config
from genesis_jax.data.pipeline import global_batch
from genesis_jax.models import build_model
from genesis_jax.pretext import build_pretext, masks
from genesis_jax.train.config_checks import validate_pretrain_config
from genesis_jax.train.loop import config_dict
from genesis_jax.train.mesh import batch_sharding, make_mesh
from genesis_jax.train.schedules import build_optimizer, get_learning_rate, set_learning_rate
from genesis_jax.train.checkpointing import CORRUPT_DIR, TrainCheckpoints
from genesis_jax.train.state import STATE_FIELDS, TASK_FIELDS, abstract_train_state, create_train_state
from genesis_jax.train.steps import make_eval_step, make_train_step

TOKEN = ["--config.pretext.mask_fill=token"]


def cubes(seed: int, channels: int = 1) -> dict[str, np.ndarray]:
    return {"cube": np.random.default_rng(seed).uniform(0.0, 1.0, (2, 16, 16, 8, channels)).astype(np.float32)}


def token_of(state) -> np.ndarray:
    return np.asarray(state.task_params[masks.TOKEN])


@pytest.mark.parametrize("spec", ["mim:tiny", "mim:2d,tiny", "genesis_mim:tiny"])
def test_token_is_trained_by_the_step_without_retrace_and_fills_the_masked_voxels(spec):
    config = load_config(f"pretrain/{spec}", TOKEN)
    validate_pretrain_config(config, data=False)
    pretext = build_pretext(config)
    assert set(pretext.params) == {masks.TOKEN} and pretext.params[masks.TOKEN].shape == (1,)
    mesh = make_mesh(1)
    model = build_model(config.model)
    tx = build_optimizer(**config_dict(config.optimizer))
    state = create_train_state(model, tx, jax.random.key(0), tuple(config.input_shape), mesh,
                               task_params=pretext.params)
    np.testing.assert_array_equal(token_of(state), [0.0])  # starts at fill_value
    batch = global_batch(cubes(1), batch_sharding(mesh))

    # the token's gradient, computed apart from the step: non-zero
    def loss_of_token(token):
        inputs, targets = pretext.prepare(jax.random.key(7), batch, {masks.TOKEN: token})
        outputs = model.apply(state.variables, inputs, train=False)
        return pretext.loss(targets, outputs)

    assert float(jnp.abs(jax.grad(loss_of_token)(state.task_params[masks.TOKEN])).max()) > 0.0

    chex.clear_trace_counter()  # chex counts per definition site: the parametrized runs share prepare's
    step = make_train_step(pretext.loss, chex.assert_max_traces(pretext.prepare, n=1), mesh=mesh, max_traces=1)
    before = token_of(state)
    for i in range(3):
        state, metrics = step(state, batch)
        assert bool(metrics["finite"])
        after = token_of(state)
        assert not np.array_equal(after, before), f"the token did not change at step {i + 1}"
        before = after
        # the loop's learning-rate change reaches the token's optimiser state too, without a recompile
        state = state.replace(opt_state=set_learning_rate(state.opt_state, 0.05),
                              task_opt_state=set_learning_rate(state.task_opt_state, 0.05))
    assert float(get_learning_rate(state.task_opt_state)) == pytest.approx(0.05)
    assert set(state.checkpoint_tree()) == {*STATE_FIELDS, *TASK_FIELDS}
    assert not any(masks.TOKEN in jax.tree_util.keystr(p) for p, _ in
                   jax.tree_util.tree_flatten_with_path(state.variables)[0])  # not a network parameter

    # what validation, the gate and the previews see: the state's trained token in every masked voxel
    out = make_eval_step(pretext.loss, pretext.prepare)(state, batch, jax.random.key(3))
    shown = np.asarray(out["targets"].get("shown_mask", out["targets"]["mask"]))[..., 0] > 0
    inputs = np.asarray(out["inputs"])[..., 0]
    assert shown.any() and (~shown).any()
    np.testing.assert_array_equal(inputs[shown], np.full(shown.sum(), token_of(state)[0]))
    assert not np.isin(inputs[~shown], token_of(state)).all()


def test_one_token_value_per_input_channel():
    config = load_config("pretrain/mim:tiny", [*TOKEN, "--config.input_shape=(16,16,8,2)",
                                               "--config.model.in_channels=2"])
    pretext = build_pretext(config)
    assert pretext.params[masks.TOKEN].shape == (2,)
    token = jnp.asarray([0.25, -0.75])
    batch = {"cube": jnp.asarray(cubes(2, channels=2)["cube"])}
    inputs, targets = jax.jit(pretext.prepare)(jax.random.key(4), batch, {masks.TOKEN: token})
    mask = np.asarray(targets["mask"])[..., 0] > 0
    for c in range(2):
        np.testing.assert_array_equal(np.asarray(inputs)[..., c][mask], np.float32(token[c]))
        np.testing.assert_array_equal(np.asarray(inputs)[..., c][~mask], batch["cube"][..., c][~mask])
    with pytest.raises(ValueError, match="mask_fill='token'"):  # never silently the initial value
        pretext.prepare(jax.random.key(4), batch)


def test_constant_fill_owns_no_parameters_and_checkpoints_the_fields_it_did():
    config = load_config("pretrain/mim:tiny")
    pretext = build_pretext(config)
    assert pretext.params == {}
    state = create_train_state(build_model(config.model), build_optimizer(**config_dict(config.optimizer)),
                               jax.random.key(0), tuple(config.input_shape), make_mesh(1), task_params=pretext.params)
    assert set(state.checkpoint_tree()) == set(STATE_FIELDS) and state.task_opt_state is None


def test_unknown_fill_is_one_line_naming_the_field():
    config = load_config("pretrain/mim:tiny", ["--config.pretext.mask_fill=noise"])
    with pytest.raises(ConfigError) as err:
        validate_pretrain_config(config, data=False)
    message = str(err.value)
    assert "\n" not in message and message.startswith("config.pretext.mask_fill='noise'"), message
    assert "'constant', 'token'" in message


def test_resuming_with_the_other_fill_is_refused_in_one_line_and_keeps_the_checkpoints(tmp_path):
    """A checkpoint written with the constant fill is intact: resuming it with mask_fill='token' (a state with the
    token) must name the mismatch, not move the checkpoints to corrupt_checkpoints/."""
    config = load_config("pretrain/mim:tiny")
    model, tx, mesh = build_model(config.model), build_optimizer(**config_dict(config.optimizer)), make_mesh(1)
    shape, key = tuple(config.input_shape), jax.random.key(0)
    state = create_train_state(model, tx, key, shape, mesh)
    ckpts = TrainCheckpoints(tmp_path, async_save=False)
    for step in (4, 8):
        ckpts.save(step, state.checkpoint_tree(), meta={"step": step})
    token = build_pretext(load_config("pretrain/mim:tiny", TOKEN)).params
    try:
        with pytest.raises(ConfigError) as err:
            ckpts.resume(lambda: abstract_train_state(model, tx, key, shape, mesh, task_params=token))
        assert "\n" not in str(err.value) and "task_params" in str(err.value) and "checkpoints/8" in str(err.value)
        assert ckpts.latest.all_steps() == [4, 8] and not (tmp_path / CORRUPT_DIR).exists()
        restored, meta = ckpts.resume(lambda: abstract_train_state(model, tx, key, shape, mesh))  # the same fill
        assert meta["step"] == 8 and restored.task_params == {}
    finally:
        ckpts.close()
