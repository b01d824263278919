"""pretrain() end to end on a tiny network: its outputs, exact resume, the NaN guard, and --init from a workdir."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from genesis_jax.train.checkpointing import TrainCheckpoints, load_init_weights
from genesis_jax.train.metrics_log import read_metrics
from genesis_jax.train.pretrain import TrainingDiverged, pretrain
from tests.train.helpers import REFERENCE_STEPS, assert_same_curve, losses, noise_transform, tiny_config


def test_outputs_of_a_run(reference_run):
    summary, workdir = reference_run
    assert summary["stopped"] == "completed" and summary["step"] == REFERENCE_STEPS and summary["resumed_from"] is None
    rows = read_metrics(workdir)
    assert [int(r["step"]) for r in rows] == list(range(1, REFERENCE_STEPS + 1))
    assert {"loss", "learning_rate", "grad_norm", "steps_per_s", "pairs_per_s"} <= set(rows[0])
    assert rows[-1]["loss"] < rows[0]["loss"]  # it learns the restoration
    validation = read_metrics(workdir, "validation.csv")
    assert [int(r["step"]) for r in validation] == [4, 8, 12] and summary["best_val_loss"] == min(
        r["val_loss"] for r in validation)
    kinds = {json.loads(line)["kind"] for line in (workdir / "metrics.jsonl").read_text().splitlines()}
    assert kinds == {"train", "validation"}
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    previews = sorted(p.name for p in (workdir / "previews").glob("*.png"))
    assert previews == ["step_0000008.png", "step_0000012.png"]
    with Image.open(workdir / "previews" / previews[-1]) as im:  # titles, 4 + 1 clean rows x 3 columns, a note
        assert im.size[0] == 4 * (3 * 16 + 4) and im.size[1] > 4 * (5 * 16 + 8)
    variables, model_config, meta = load_init_weights(summary["weights"])
    assert model_config["base_width"] == 2 and meta["step"] == summary["best_step"]
    assert all(np.isfinite(v).all() for v in __import__("jax").tree.leaves(variables))


def test_resumed_run_repeats_the_uninterrupted_curve(reference_run, tmp_path):
    _, reference = reference_run
    first = pretrain(tiny_config("--config.max_steps=6"), tmp_path, transform=noise_transform)
    assert first["step"] == 6
    second = pretrain(tiny_config(f"--config.max_steps={REFERENCE_STEPS}"), tmp_path, transform=noise_transform)
    assert second["resumed_from"] == 6 and second["step"] == REFERENCE_STEPS
    assert_same_curve(losses(tmp_path), losses(reference), rtol=1e-6)
    assert second["params_fingerprint"] == reference_run[0]["params_fingerprint"]


class NaNCubes:
    def __len__(self):
        return 32

    def __getitem__(self, i):
        return np.full((16, 16, 8), np.nan, np.float32)


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(reference_run, tmp_path):
    _, reference = reference_run
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    with pytest.raises(TrainingDiverged, match=rf"non-finite loss at step {REFERENCE_STEPS + 1} .*last good "
                                               rf"checkpoint is step {REFERENCE_STEPS}"):
        pretrain(tiny_config(f"--config.max_steps={REFERENCE_STEPS + 4}"), workdir, transform=noise_transform,
                 train_source=NaNCubes())
    ckpts = TrainCheckpoints(workdir)
    assert ckpts.latest_step() == REFERENCE_STEPS
    ckpts.close()
    variables, _, _ = load_init_weights(workdir)
    assert all(np.isfinite(v).all() for v in __import__("jax").tree.leaves(variables))


def test_init_from_a_training_workdir(reference_run, tmp_path):
    summary, reference = reference_run
    out = pretrain(tiny_config("--config.max_steps=1", f"--config.init={reference}"), tmp_path,
                   transform=noise_transform)
    # starting from the reference's best weights, the first loss is below every loss of its first epoch
    first_epoch = [loss for step, loss in losses(reference).items() if step <= 4]
    assert losses(tmp_path)[1] < min(first_epoch)
    assert out["resumed_from"] is None


def test_plateau_halving_and_early_stopping_end_the_run_for_good(tmp_path):
    # A learning rate of 1e-12 leaves the network unchanged, so the validation loss plateaus from epoch 1 on.
    config = tiny_config("--config.steps_per_epoch=1", "--config.max_steps=10", "--config.optimizer.learning_rate=1e-12",
                         "--config.schedule.patience=1", "--config.early_stopping.patience=2")
    summary = pretrain(config, tmp_path, transform=noise_transform)
    assert summary["stopped"] == "early_stopping" and summary["step"] == 3 and summary["best_step"] == 1
    validation = read_metrics(tmp_path, "validation.csv")
    assert [r["learning_rate"] for r in validation] == pytest.approx([1e-12, 5e-13, 2.5e-13])
    again = pretrain(config, tmp_path, transform=noise_transform)
    assert again["stopped"] == "early_stopping" and again["step"] == 3 and again["resumed_from"] == 3
    # the rerun trained no step: it reports the checkpointed last loss, and its summary is valid JSON (no NaN)
    assert again["final_loss"] == summary["final_loss"] and json.dumps(again, allow_nan=False)
