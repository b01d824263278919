"""The parameters' exponential moving average (genesis_jax.train.ema): its math on a toy problem, where it lives in
the optimiser state, a checkpoint round trip that resumes the same average, and a fine-tuning run that validates,
exports and tests the averaged parameters."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genesis_jax.models import build_model
from genesis_jax.models.weights import load_weights
from genesis_jax.train import checkpointing
from genesis_jax.train.ema import describe, evaluated_state, find_ema, params_ema
import genesis_jax.train.finetune as finetune_module
from genesis_jax.train.finetune import finetune
from genesis_jax.train.finetune_steps import make_finetune_optimizer
from genesis_jax.train.losses import mse_loss
from genesis_jax.train.mesh import make_mesh
from genesis_jax.train.schedules import build_optimizer
from genesis_jax.train.state import abstract_train_state, create_train_state
from genesis_jax.train.steps import make_train_step
from tests.train.test_finetune_run import UNET, seg_config, seg_data


def test_ema_math_on_a_quadratic():
    """SGD on 0.5 * |w - target|^2 with the EMA last in the chain, against the formula computed in numpy."""
    decay, lr, target = 0.9, 0.3, np.array([1.0, -2.0, 0.5], np.float32)
    tx = build_optimizer("sgd", lr, momentum=0.0, then=params_ema(decay))
    w = jnp.zeros(3, jnp.float32)
    state = tx.init(w)
    ema_ref = np.zeros(3, np.float64)
    w_ref = np.zeros(3, np.float64)
    for t in range(1, 31):
        grads = w - target
        updates, state = tx.update(grads, state, w)
        w = optax.apply_updates(w, updates)
        w_ref = w_ref - lr * (w_ref - target)
        d = min(decay, (1 + t) / (10 + t))
        ema_ref = d * ema_ref + (1 - d) * w_ref
        np.testing.assert_allclose(np.asarray(find_ema(state).ema), ema_ref, rtol=1e-5, atol=1e-6)
    assert int(find_ema(state).count) == 30
    # the average lags the parameters on their way to the target, and the updates themselves are untouched
    assert np.all(np.abs(np.asarray(find_ema(state).ema) - target) > np.abs(np.asarray(w) - target))
    np.testing.assert_allclose(np.asarray(w), w_ref, rtol=1e-5)


def test_no_ema_without_decay_and_bad_decays():
    labels = {"w": "new"}
    assert find_ema(make_finetune_optimizer({"name": "adam", "learning_rate": 1e-3}, labels, 1.0).init(
        {"w": jnp.zeros(2)})) is None
    with_ema = make_finetune_optimizer({"name": "adam", "learning_rate": 1e-3}, labels, 1.0, 0.9)
    assert float(find_ema(with_ema.init({"w": jnp.zeros(2)})).decay) == pytest.approx(0.9)
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="ema_decay"):
            params_ema(bad)


def _tiny_state(tx, mesh):
    model = build_model(dict(name="genesis_unet", variant="keras", ndim=2, base_width=2, depth=2, num_classes=1))
    return create_train_state(model, tx, jax.random.key(0), (8, 8, 1), mesh)


def test_checkpoint_resume_continues_the_same_average(tmp_path):
    mesh = make_mesh(1)
    tx = build_optimizer("adam", 1e-2, then=params_ema(0.95))
    step = make_train_step(mse_loss, mesh=mesh)
    rng = np.random.default_rng(0)
    batches = [{"inputs": jnp.asarray(rng.random((2, 8, 8, 1), np.float32)),
                "targets": jnp.asarray(rng.random((2, 8, 8, 1), np.float32))} for _ in range(6)]

    state = _tiny_state(tx, mesh)
    for batch in batches:
        state, _ = step(state, batch)
    uninterrupted = jax.device_get(find_ema(state.opt_state).ema)

    state = _tiny_state(tx, mesh)
    for batch in batches[:3]:
        state, _ = step(state, batch)
    ckpts = checkpointing.TrainCheckpoints(tmp_path, keep=1, async_save=False)
    ckpts.save(3, state.checkpoint_tree(), meta={"step": 3})
    ckpts.close()
    ckpts = checkpointing.TrainCheckpoints(tmp_path, keep=1, async_save=False)
    model = build_model(dict(name="genesis_unet", variant="keras", ndim=2, base_width=2, depth=2, num_classes=1))
    restored, _ = ckpts.resume(lambda: abstract_train_state(model, tx, jax.random.key(0), (8, 8, 1), mesh), None)
    ckpts.close()
    assert int(find_ema(restored.opt_state).count) == 3
    for batch in batches[3:]:
        restored, _ = step(restored, batch)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(find_ema(restored.opt_state).ema), uninterrupted)
    swapped = evaluated_state(restored)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(swapped.params), uninterrupted)
    assert describe(restored) == {"parameters": "exponential moving average", "ema_decay": 0.95, "ema_updates": 6}


def test_finetune_validates_exports_and_tests_the_average(tmp_path, monkeypatch):
    config = seg_config(UNET, (16, 16, 8, 1))
    config.ema_decay = 0.5
    config.select_best = False  # the final state's average is what is exported
    config.precise_bn.num_batches = 0  # exported variables = the state's, untouched
    results = []

    def keep_result(*args, **kwargs):
        results.append(loop_train(*args, **kwargs))
        return results[-1]

    loop_train = finetune_module.train
    monkeypatch.setattr(finetune_module, "train", keep_result)
    summary = finetune(config, tmp_path, data=seg_data())
    evaluated = summary["evaluated"]
    assert evaluated["parameters"] == "exponential moving average"
    assert evaluated["ema_decay"] == 0.5 and evaluated["ema_updates"] == 4
    assert json.loads((tmp_path / "summary.json").read_text())["evaluated"] == json.loads(json.dumps(evaluated))
    exported, _, meta = load_weights(tmp_path / "weights")
    assert meta["parameters"] == "exponential moving average"
    state = results[0].state
    average = jax.device_get(find_ema(state.opt_state).ema)
    jax.tree.map(np.testing.assert_array_equal, exported["params"], average)
    jax.tree.map(np.testing.assert_array_equal, results[0].variables["params"], average)  # what the test set saw
    trained = jax.tree.leaves(jax.device_get(state.params))
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(average), trained))
    best, _, _ = checkpointing.load_init_weights(tmp_path)  # best/ holds the validated parameters: an average too
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(best["params"]), trained))


def test_pretrain_validates_and_exports_the_average(reference_run, tmp_path):
    """The same tiny pre-training with ``ema_decay``: identical training losses (the average never touches the
    updates), different validation figures (they score the average), and weights/ that say so."""
    from genesis_jax.train.metrics_log import read_metrics
    from genesis_jax.train.pretrain import pretrain
    from tests.train.helpers import REFERENCE_STEPS, noise_transform, tiny_config

    _, reference = reference_run
    summary = pretrain(tiny_config(f"--config.max_steps={REFERENCE_STEPS}", "--config.ema_decay=0.5"), tmp_path,
                       transform=noise_transform)
    np.testing.assert_allclose([r["loss"] for r in read_metrics(tmp_path)],
                               [r["loss"] for r in read_metrics(reference)], rtol=1e-6)
    averaged = [r["val_loss"] for r in read_metrics(tmp_path, "validation.csv")]
    trained = [r["val_loss"] for r in read_metrics(reference, "validation.csv")]
    assert len(averaged) == len(trained) and not np.allclose(averaged, trained, rtol=1e-6)
    _, _, meta = load_weights(summary["weights"])
    assert meta["parameters"] == "exponential moving average" and meta["ema_decay"] == 0.5
    assert meta["ema_updates"] == summary["best_step"]
    _, _, plain = load_weights(reference / "weights")
    assert "ema_decay" not in plain
