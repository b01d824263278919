"""Fine-tuning end to end on tiny synthetic data: Genesis U-Net 3D (scratch, transfer, frozen encoder, resume after
SIGTERM), UNet++ 2D/3D with deep supervision (loss summed over heads, evaluation at every pruning level), and
classification."""

import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genesis_jax.models import build_model
from genesis_jax.train.checkpointing import load_weights
from genesis_jax.train.finetune import evaluate_test_set, finetune
from genesis_jax.train.finetune_config import finetune_config, tiny
from genesis_jax.train.finetune_data import ArrayPool, LabelledVolume, TaskData, VolumePatchSampler
from genesis_jax.train.finetune_steps import FinetuneState, build_optimizer, make_train_step
from genesis_jax.train.losses import deep_supervision_loss, dice_loss
from genesis_jax.train.transfer import parameter_groups

# Every run below compiles the same small graphs again; the persistent cache turns repeats into cache hits.
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    previous = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    yield
    jax.config.update("jax_compilation_cache_dir", previous)


def blob_volume(seed, shape=(20, 20, 10)):
    """A bright ellipsoid ("organ") in a noisy background; label 1 inside."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(np.float32)
    centre = rng.uniform(0.35, 0.65, 3) * np.array(shape)
    radii = np.array(shape) * rng.uniform(0.2, 0.3)
    label = (np.sum(((grid - centre) / radii) ** 2, -1) < 1).astype(np.uint8)
    image = (0.3 + 0.4 * label + 0.05 * rng.standard_normal(shape)).astype(np.float32)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    return LabelledVolume(image, label, name=f"blob{seed}", affine=affine, spacing=(2.0, 2.0, 3.0))


def seg_data(patch):
    vols = [blob_volume(i) for i in range(3)]
    sampler = VolumePatchSampler(vols[:2], patch, foreground_prob=0.7, augment_flips=True)
    return TaskData("segmentation", sampler, sampler.fixed_set(4, seed=5), test_volumes=[vols[2]], description="blobs")


def seg_config(model, input_shape, **kw):
    c = finetune_config(task="segmentation", model=model, input_shape=(64, 64, 32, 1), loss="dice",
                        learning_rate=1e-2, batch_size=16, patience=20, data={"source": "given"})
    c = tiny(c, input_shape=input_shape, **kw)
    c.progress = False
    return c


UNET = dict(name="genesis_unet", variant="keras", ndim=3, num_classes=1)


@pytest.fixture(scope="module")
def scratch_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("scratch")
    config = seg_config(UNET, (16, 16, 8, 1))
    return config, workdir, finetune(config, workdir, data=seg_data((16, 16, 8)))


def test_genesis_unet_3d_scratch_run_writes_everything(scratch_run):
    config, workdir, summary = scratch_run
    assert summary["steps"] == 4 and summary["epochs"] == 2 and not summary["preempted"]
    for name in ("config.json", "transfer_report.json", "metrics.jsonl", "summary.json"):
        assert (workdir / name).is_file(), name
    assert (workdir / "weights" / "best" / "model_config.json").is_file()
    assert any((workdir / "tb").iterdir())
    assert (workdir / "predictions" / "blob2_overlay.png").is_file()
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2, 3, 4]
    assert {"val_loss", "val_mean_iou", "val_dice", "learning_rate"} <= set(rows[-1])
    test = summary["test"]
    assert test["per_volume"][0]["name"] == "blob2"
    assert set(test["set"]) == {"mean_iou", "iou", "dice", "soft_dice"}
    assert 0.0 <= test["mean"]["dice"] <= 1.0
    assert json.loads((workdir / "transfer_report.json").read_text())["source"] == "scratch (he_uniform)"


def test_resume_after_sigterm_equals_uninterrupted(scratch_run, tmp_path):
    config, workdir, _ = scratch_run
    data = seg_data((16, 16, 8))

    class Interrupting(VolumePatchSampler):
        def batch(self, step, batch_size, seed):
            if step == 3:  # during epoch 2: SIGTERM as a scheduler sends it
                os.kill(os.getpid(), signal.SIGTERM)
            return super().batch(step, batch_size, seed)

    interrupting = Interrupting(data.train.volumes, data.train.patch_shape, 0.7, augment_flips=True)
    run = tmp_path / "run"
    first = finetune(config, run, data=TaskData("segmentation", interrupting, data.validation, data.test_volumes))
    assert first["preempted"] and first["steps"] == 4 and "test" not in first
    second = finetune(config, run, data=data)  # resumes from the checkpoint written on SIGTERM
    assert not second["preempted"] and second["steps"] == 4
    a, _, _ = load_weights(run / "weights" / "best")
    b, _, _ = load_weights(workdir / "weights" / "best")
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a, b)
    assert [h["val_loss"] for h in second["history"]] == pytest.approx(
        [h["val_loss"] for h in json.loads((workdir / "summary.json").read_text())["history"]], rel=1e-5)


def test_transfer_with_frozen_encoder(scratch_run, tmp_path):
    config, workdir, _ = scratch_run
    config = seg_config(UNET, (16, 16, 8, 1))
    config.init.checkpoint = str(workdir)  # a workdir: its weights/best are used
    config.init.freeze_encoder = True
    config.max_epochs = 1
    summary = finetune(config, tmp_path / "ft", data=seg_data((16, 16, 8)))
    report = json.loads((tmp_path / "ft" / "transfer_report.json").read_text())
    assert "params/decoder_0/conv_0/kernel" in report["loaded"] and "params/head/kernel" in report["fresh"]
    pre, _, _ = load_weights(workdir / "weights" / "best")
    post, _, _ = load_weights(tmp_path / "ft" / "weights" / "best")
    np.testing.assert_array_equal(post["params"]["encoder_1"]["conv_0"]["kernel"], pre["params"]["encoder_1"]["conv_0"]["kernel"])
    assert not np.array_equal(post["params"]["decoder_0"]["conv_0"]["kernel"], pre["params"]["decoder_0"]["conv_0"]["kernel"])
    assert summary["init"] == str(workdir)


def test_unetpp_deep_supervision_loss_is_the_sum_over_heads():
    model = build_model(dict(name="unetpp", ndim=2, base_width=2, depth=2, dropout=0.0))
    x = jnp.asarray(np.random.default_rng(0).random((2, 8, 8, 1)), jnp.float32)
    y = (x > 0.5).astype(jnp.float32)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    params = variables["params"]
    tx = build_optimizer("adam", 1e-3, parameter_groups(params, set()))
    heads = model.apply(variables, x, return_all_heads=True)
    state = FinetuneState(jnp.zeros((), jnp.int32), params, {}, tx.init(params))  # donated to the step
    _, metrics = make_train_step(model, "dice", tx, deep_supervision=True, seed=0)(state, x, y)
    assert len(heads) == 2
    expected = deep_supervision_loss(dice_loss, y, heads)
    assert float(metrics["loss"]) == pytest.approx(float(expected), rel=1e-5)
    assert float(expected) == pytest.approx(sum(float(dice_loss(y, h)) for h in heads), rel=1e-6)


@pytest.mark.parametrize("ndim, patch, depth", [(2, (16, 16), 2), (3, (8, 8, 4), 1)])
def test_unetpp_finetunes_and_evaluates_at_every_pruning_level(tmp_path, ndim, patch, depth):
    model = dict(name="unetpp", ndim=ndim, num_classes=1, deep_supervision=True, dropout=0.5)
    config = seg_config(model, (*patch, 1), depth=depth)
    config.loss = "bce_dice"
    data = seg_data(patch)
    summary = finetune(config, tmp_path, data=data)
    assert summary["test"]["per_volume"][0]["name"] == "blob2"
    best, model_config, _ = load_weights(tmp_path / "weights" / "best")
    dice = {}
    for level in range(1, depth + 1):
        config.eval.prune_level = level
        dice[level] = evaluate_test_set(config, model_config, best, data)["mean"]["dice"]
    assert set(dice) == set(range(1, depth + 1)) and all(0.0 <= d <= 1.0 for d in dice.values())


def test_classification_from_pretrained_encoder(scratch_run, tmp_path):
    _, workdir, _ = scratch_run
    rng = np.random.default_rng(0)
    y = np.arange(24) % 2
    x = (0.2 * rng.random((24, 16, 16, 8)) + 0.5 * y[:, None, None, None]).astype(np.float32)
    pool = ArrayPool(x[:16], y[:16], spatial_ndim=3, augment_flips=True, segmentation=False)
    data = TaskData("classification", pool, (pool.x[:4], pool.y[:4]), test_arrays=(x[16:, ..., None], y[16:]))
    c = finetune_config(task="classification", model=dict(UNET, name="genesis_classifier", num_classes=1),
                        input_shape=(64, 64, 32, 1), loss="bce", learning_rate=1e-3, batch_size=24, patience=10,
                        data={"source": "given"})
    c = tiny(c, input_shape=(16, 16, 8, 1))
    c.progress = False
    c.init.checkpoint = str(workdir / "weights" / "best")
    summary = finetune(c, tmp_path, data=data)
    report = json.loads((tmp_path / "transfer_report.json").read_text())
    assert "params/backbone/encoder_0/conv_0/kernel" in report["loaded"]
    assert all(p.startswith("params/head/") for p in report["fresh"])
    assert set(summary["test"]) == {"auc", "accuracy", "n", "positives"} and summary["test"]["n"] == 8
    assert 0.0 <= summary["test"]["auc"] <= 1.0
