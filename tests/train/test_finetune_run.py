"""Fine-tuning end to end on tiny synthetic data: Genesis U-Net 3D (scratch, resume after SIGTERM, transfer with a
frozen encoder), UNet++ 2D/3D with deep supervision (loss summed over heads, evaluation at every pruning level),
and classification from a pre-trained encoder."""

import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import genesis_jax.train.finetune as finetune_module
from genesis_jax.data.sources import ArraySource, ListSource
from genesis_jax.models import build_model
from genesis_jax.models.weights import load_weights
from genesis_jax.evaluation.test_set import evaluate_test_set
from genesis_jax.train.finetune import finetune
from genesis_jax.configs.finetune.common import finetune_config, synthetic_data, tiny
from genesis_jax.data.task_data import LabelledVolume, TaskData
from genesis_jax.train.finetune_steps import make_finetune_optimizer
from genesis_jax.train.losses import deep_supervision_loss, dice_loss
from genesis_jax.train.mesh import make_mesh
from genesis_jax.train.state import create_train_state
from genesis_jax.train.steps import make_train_step
from genesis_jax.train.transfer import parameter_groups

# Runs below compile the same small graphs again; the persistent cache turns the repeats into cache hits.
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    previous = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    yield
    jax.config.update("jax_compilation_cache_dir", previous)


def blob(seed, shape=(20, 20, 10)):
    """A bright ellipsoid ("organ") in a noisy background; label 1 inside."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(np.float32)
    centre = rng.uniform(0.35, 0.65, 3) * np.array(shape)
    radii = np.array(shape) * rng.uniform(0.2, 0.3)
    label = (np.sum(((grid - centre) / radii) ** 2, -1) < 1).astype(np.uint8)
    image = (0.3 + 0.4 * label + 0.05 * rng.standard_normal(shape)).astype(np.float32)
    return {"image": image, "label": label, "scan_id": f"blob{seed}", "spacing": np.array([2.0, 2.0, 3.0]),
            "affine": np.diag([2.0, 2.0, 3.0, 1.0])}


def seg_data():
    vols = [blob(i) for i in range(3)]
    test = LabelledVolume(vols[2]["image"], vols[2]["label"], "blob2", vols[2]["affine"], (2.0, 2.0, 3.0))
    return TaskData("segmentation", ListSource(vols[:2]), ListSource(vols[:2]), patch_shape=(0,), test_volumes=[test])


def seg_config(model, input_shape, **kw):
    c = finetune_config(task="segmentation", model=model, input_shape=(64, 64, 32, 1), loss="dice",
                        learning_rate=1e-2, batch_size=16, patience=20, data=synthetic_data("liver"),
                        sampling_mode="patches")
    c = tiny(c, input_shape=input_shape, **kw)
    c.num_devices = 2  # the batch of 2 is sharded over 2 of the 8 test devices
    c.logging.progress = False
    return c


UNET = dict(name="genesis_unet", variant="keras", ndim=3, num_classes=1)


@pytest.fixture(scope="module")
def scratch_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("scratch")
    config = seg_config(UNET, (16, 16, 8, 1))
    return config, workdir, finetune(config, workdir, data=seg_data())


def test_genesis_unet_3d_scratch_run_writes_everything(scratch_run):
    _, workdir, summary = scratch_run
    assert summary["stopped"] == "completed" and summary["step"] == 4 and summary["epochs"] == 2
    for name in ("config.json", "transfer_report.json", "metrics.csv", "validation.csv", "summary.json"):
        assert (workdir / name).is_file(), name
    assert (workdir / "weights" / "model_config.json").is_file() and (workdir / "best").is_dir()
    assert (workdir / "predictions" / "blob2_overlay.png").is_file()
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2, 3, 4]
    assert {"val_loss", "val_mean_iou", "val_dice", "learning_rate"} <= set(rows[-1])
    test = summary["test"]
    assert test["per_volume"][0]["name"] == "blob2" and set(test["set"]) == {"mean_iou", "iou", "dice", "soft_dice"}
    assert 0.0 <= test["mean"]["dice"] <= 1.0
    assert summary["evaluated"]["kind"] == "best validation loss"
    assert json.loads((workdir / "transfer_report.json").read_text())["source"] == "scratch (he_uniform)"


def test_resume_after_sigterm_equals_uninterrupted(scratch_run, tmp_path, monkeypatch):
    config, workdir, uninterrupted = scratch_run
    real = finetune_module.make_train_step

    def interrupted_after_three(*args, **kwargs):
        step, calls = real(*args, **kwargs), []

        def wrapped(state, batch):
            calls.append(1)
            if len(calls) == 3:  # mid-epoch 2, as a scheduler's SIGTERM would arrive
                os.kill(os.getpid(), signal.SIGTERM)
            return step(state, batch)

        return wrapped

    monkeypatch.setattr(finetune_module, "make_train_step", interrupted_after_three)
    first = finetune(config, tmp_path, data=seg_data())
    assert first["stopped"] == "preempted" and first["step"] == 3 and "test" not in first
    monkeypatch.setattr(finetune_module, "make_train_step", real)
    second = finetune(config, tmp_path, data=seg_data())
    assert second["stopped"] == "completed" and second["resumed_from"] == 3 and second["step"] == 4
    a, _, _ = load_weights(tmp_path / "weights")
    b, _, _ = load_weights(workdir / "weights")
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a, b)
    assert [h["val_loss"] for h in second["history"]] == pytest.approx(
        [h["val_loss"] for h in uninterrupted["history"]], rel=1e-5)


def test_transfer_from_a_workdir_with_frozen_encoder(scratch_run, tmp_path):
    _, workdir, _ = scratch_run
    config = seg_config(UNET, (16, 16, 8, 1))
    config.init.checkpoint = str(workdir)  # a training workdir: its best checkpoint is used
    config.init.freeze_encoder = True
    config.max_epochs = 1
    config.select_best = False
    summary = finetune(config, tmp_path, data=seg_data())
    report = json.loads((tmp_path / "transfer_report.json").read_text())
    assert "params/decoder_0/conv_0/kernel" in report["loaded"] and "params/head/kernel" in report["fresh"]
    pre, _, _ = load_weights(workdir / "weights")
    post, _, _ = load_weights(tmp_path / "weights")
    np.testing.assert_array_equal(post["params"]["encoder_1"]["conv_0"]["kernel"],
                                  pre["params"]["encoder_1"]["conv_0"]["kernel"])
    assert not np.array_equal(post["params"]["decoder_0"]["conv_0"]["kernel"],
                              pre["params"]["decoder_0"]["conv_0"]["kernel"])
    assert summary["init"] == str(workdir) and summary["evaluated"]["kind"] == "final"


def test_unetpp_deep_supervision_loss_is_the_sum_over_heads():
    model = build_model(dict(name="unetpp", ndim=2, base_width=2, depth=2, dropout=0.0))
    x = jnp.asarray(np.random.default_rng(0).random((2, 8, 8, 1)), jnp.float32)
    y = (x > 0.5).astype(jnp.float32)
    mesh = make_mesh(1)
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), x))["params"]
    tx = make_finetune_optimizer(dict(name="adam", learning_rate=1e-3), parameter_groups(abstract, set()), 1.0)
    state = create_train_state(model, tx, jax.random.key(0), (8, 8, 1), mesh)
    heads = jax.jit(lambda v: model.apply(v, x, return_all_heads=True))(state.variables)
    expected = sum(float(dice_loss(y, h)) for h in heads)
    assert len(heads) == 2
    assert float(deep_supervision_loss(dice_loss, y, heads)) == pytest.approx(expected, rel=1e-6)
    step = make_train_step(dice_loss, lambda key, batch: (batch["image"], batch["label"]), mesh=mesh,
                           apply_kwargs={"return_all_heads": True})
    _, metrics = step(state, {"image": x, "label": y})
    assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("ndim, patch, depth", [(2, (16, 16, 1), 2), (3, (8, 8, 4, 1), 1)])
def test_unetpp_finetunes_and_evaluates_at_every_pruning_level(tmp_path, ndim, patch, depth):
    model = dict(name="unetpp", ndim=ndim, num_classes=1, deep_supervision=True, dropout=0.5)
    config = seg_config(model, patch, depth=depth)
    config.loss = "bce_dice"
    data = seg_data()
    test_volumes, data.test_volumes = data.test_volumes, []  # evaluated below, at each pruning level
    summary = finetune(config, tmp_path, data=data)
    assert summary["test"] == {} and summary["step"] == 4
    data.test_volumes = test_volumes
    weights, model_config, _ = load_weights(tmp_path / "weights")
    dice = {}
    for level in range(1, depth + 1):
        config.eval.prune_level = level
        dice[level] = evaluate_test_set(config, model_config, weights, data)["mean"]["dice"]
    assert set(dice) == set(range(1, depth + 1)) and all(0.0 <= d <= 1.0 for d in dice.values())


def test_classification_from_a_pretrained_encoder(scratch_run, tmp_path):
    _, workdir, _ = scratch_run
    rng = np.random.default_rng(0)
    y = (np.arange(24) % 2).astype(np.uint8)
    x = (0.2 * rng.random((24, 16, 16, 8)) + 0.5 * y[:, None, None, None]).astype(np.float32)
    data = TaskData("classification", ArraySource(image=x[:16], label=y[:16]), ArraySource(image=x[:4], label=y[:4]),
                    None, test_arrays=(x[16:, ..., None], y[16:]))
    c = finetune_config(task="classification", model=dict(UNET, name="genesis_classifier", num_classes=1),
                        input_shape=(64, 64, 32, 1), loss="bce", learning_rate=1e-3, batch_size=24, patience=10,
                        data=synthetic_data("nodule"), sampling_mode="given")
    c = tiny(c, input_shape=(16, 16, 8, 1))
    c.num_devices = 2
    c.logging.progress = False
    c.init.checkpoint = str(workdir / "weights")
    summary = finetune(c, tmp_path, data=data)
    report = json.loads((tmp_path / "transfer_report.json").read_text())
    assert "params/backbone/encoder_0/conv_0/kernel" in report["loaded"]
    assert all(p.startswith("params/head/") for p in report["fresh"])
    assert set(summary["test"]) == {"auc", "accuracy", "n", "positives"} and summary["test"]["n"] == 8
    assert 0.0 <= summary["test"]["auc"] <= 1.0 and "val_auc" in summary["history"][-1]
