"""Precise BatchNorm in the training loops. Fine-tuning: a short keras-variant run whose running averages make it
mark the whole scan recovers with re-estimated statistics; the re-estimation reads training images only (never the
test set); ``weights/`` holds the re-estimated statistics, not the running averages. Pre-training: its ``weights/``
export is recalibrated too (keras), and left alone for the pytorch variant."""

import jax
import numpy as np
import pytest

import genesis_jax.train.finetune as finetune_module
from genesis_jax.data.sources import ListSource
from genesis_jax.models.weights import load_weights
from genesis_jax.train import checkpointing
from genesis_jax.evaluation.test_set import evaluate_test_set
from genesis_jax.train.finetune import finetune, model_config_for_run
from genesis_jax.data.task_data import TaskData, as_labelled_volume
from genesis_jax.train.pretrain import pretrain
from tests.train.helpers import noise_transform, tiny_config
from tests.train.test_finetune_run import UNET, blob, seg_config

N_BATCHES = 4


class GuardedTestSet(TaskData):
    """TaskData whose test volumes raise while BatchNorm statistics are being re-estimated."""

    recalibrating = False

    @property
    def test_volumes(self):
        if GuardedTestSet.recalibrating:
            raise AssertionError("precise BatchNorm read the test set")
        return self._test

    @test_volumes.setter
    def test_volumes(self, value):
        self._test = value


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    vols = [blob(i) for i in range(2)]
    # the "test set" is the training scans themselves: Dice on the model's own training data
    data = GuardedTestSet("segmentation", ListSource(vols), ListSource(vols), patch_shape=(0,),
                          test_volumes=[as_labelled_volume(v, i) for i, v in enumerate(vols)])
    config = seg_config(UNET, (16, 16, 8, 1))  # keras variant: BatchNorm momentum 0.99, running averages
    config.num_devices = 1
    config.steps_per_epoch, config.max_epochs = 8, 2
    config.optimizer.learning_rate = 5e-2
    config.precise_bn.num_batches = N_BATCHES
    config.eval.overlays = False
    calls = []
    real = finetune_module.precise_bn.recompute_batch_stats

    def instrumented(model, variables, batches, **kwargs):
        GuardedTestSet.recalibrating = True
        try:
            seen = []
            new = real(model, variables, (seen.append(np.asarray(b)) or b for b in batches), **kwargs)
        finally:
            GuardedTestSet.recalibrating = False
        calls.append({"inputs": seen, "before": variables, "after": new})
        return new

    workdir = tmp_path_factory.mktemp("precise_bn")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(finetune_module.precise_bn, "recompute_batch_stats", instrumented)
        summary = finetune(config, workdir, data=data)
    return config, workdir, data, summary, calls


@pytest.mark.slow
def test_running_averages_mark_everything_and_reestimation_recovers(run):
    config, workdir, data, summary, _ = run
    best, _, _ = checkpointing.load_init_weights(workdir)  # the selected weights, with their running averages
    raw = evaluate_test_set(config, model_config_for_run(config), best, data)["mean"]["dice"]
    foreground = np.mean([v.label.mean() for v in data.test_volumes])
    everything = 2 * foreground / (1 + foreground)  # the Dice of predicting the whole scan
    assert raw <= everything + 0.02, (raw, everything)
    assert summary["test"]["mean"]["dice"] > 0.8 > raw + 0.5
    assert min(h["val_dice"] for h in summary["history"]) > 0.5  # validation saw the re-estimated statistics too


@pytest.mark.slow
def test_reestimation_reads_training_batches_only(run):
    _, _, data, summary, calls = run
    assert len(calls) == summary["epochs"] + 1  # each validation and the export
    train_images = np.concatenate([np.ravel(data.train[i]["image"]) for i in range(len(data.train))])
    for call in calls:
        assert len(call["inputs"]) == N_BATCHES and all(x.shape == (2, 16, 16, 8, 1) for x in call["inputs"])
        assert np.isin(np.concatenate([x.ravel() for x in call["inputs"]]), train_images).all()


@pytest.mark.slow
def test_weights_dir_holds_the_reestimated_statistics(run):
    _, workdir, _, summary, calls = run
    saved, _, meta = load_weights(workdir / "weights")
    best, _, _ = checkpointing.load_init_weights(workdir)
    export = calls[-1]
    jax.tree.map(np.testing.assert_array_equal, export["before"]["params"], best["params"])
    jax.tree.map(np.testing.assert_array_equal, saved["batch_stats"], jax.device_get(export["after"]["batch_stats"]))
    jax.tree.map(np.testing.assert_array_equal, saved["params"], best["params"])
    var_saved = np.asarray(saved["batch_stats"]["encoder_0"]["bn_0"]["var"])
    assert not np.allclose(var_saved, best["batch_stats"]["encoder_0"]["bn_0"]["var"], rtol=0.05)
    assert summary["evaluated"]["precise_bn_batches"] == N_BATCHES == meta["precise_bn_batches"]


@pytest.mark.parametrize("variant, expected", [("keras", 3), ("pytorch", 0)])
def test_pretrain_export_is_recalibrated(tmp_path, variant, expected):
    config = tiny_config("--config.max_steps=4", f"--config.model.variant={variant}",
                         "--config.precise_bn.num_batches=3", "--config.logging.tensorboard=False")
    summary = pretrain(config, tmp_path, transform=noise_transform)
    saved, _, meta = load_weights(summary["weights"])
    best, _, _ = checkpointing.load_init_weights(tmp_path)
    assert meta["precise_bn_batches"] == expected
    jax.tree.map(np.testing.assert_array_equal, saved["params"], best["params"])
    same = [np.array_equal(a, b) for a, b in zip(jax.tree.leaves(saved["batch_stats"]),
                                                  jax.tree.leaves(best["batch_stats"]))]
    assert not any(same) if expected else all(same)
