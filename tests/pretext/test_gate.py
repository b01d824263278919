"""The restoration quality gate: its arithmetic, its record in summary.json and weights/metadata.json, the record
a fine-tuning run inherits, and the one warning line ``finetune --init`` prints."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from genesis_jax.cli import main
from genesis_jax.models.weights import read_metadata
from genesis_jax.pretext.base import GateSettings
from genesis_jax.pretext.gate import batch_figures, gate_record, warning_line, weights_warning
from genesis_jax.train.pretrain import pretrain
from tests.train.helpers import noise_transform, tiny_config


def test_figures_against_numpy():
    rng = np.random.default_rng(0)
    image = rng.uniform(size=(3, 4, 4, 2, 1)).astype(np.float32)
    pred = rng.uniform(size=image.shape).astype(np.float32)
    got = {k: float(v) for k, v in batch_figures(jnp.asarray(pred), jnp.asarray(image), None).items()}
    assert got["restoration_mse"] == pytest.approx(np.mean((pred - image) ** 2), rel=1e-6)
    assert got["batch_mean_mse"] == pytest.approx(np.var(image), rel=1e-5)
    per_image = image.reshape(3, -1)
    assert got["image_mean_mse"] == pytest.approx(np.mean(per_image.var(axis=1)), rel=1e-5)
    # weighted: only the voxels of the mask count, the means too
    mask = (rng.uniform(size=(3, 4, 4, 2, 1)) < 0.5).astype(np.float32)
    got = {k: float(v) for k, v in batch_figures(jnp.asarray(pred), jnp.asarray(image), jnp.asarray(mask)).items()}
    chosen = image[mask > 0]
    assert got["restoration_mse"] == pytest.approx(np.mean((pred - image)[mask > 0] ** 2), rel=1e-5)
    assert got["batch_mean_mse"] == pytest.approx(np.mean((chosen - chosen.mean()) ** 2), rel=1e-5)


def test_verdict_follows_both_thresholds():
    figures = {"restoration_mse": 0.007, "batch_mean_mse": 0.01, "image_mean_mse": 0.009, "clean_identity_mse": 0.004}
    assert gate_record(figures, GateSettings(0.7, 0.005), "all voxels")["passed"]
    assert not gate_record({**figures, "restoration_mse": 0.0071}, GateSettings(0.7, 0.005), "all voxels")["passed"]
    assert not gate_record({**figures, "clean_identity_mse": 0.006}, GateSettings(0.7, 0.005), "")["passed"]
    assert gate_record({**figures, "clean_identity_mse": 0.5}, GateSettings(0.7, None), "")["passed"]
    record = gate_record(figures, GateSettings(0.7, 0.005), "all voxels")
    assert record["ratio_to_batch_mean"] == pytest.approx(0.7) and record["scored"] == "all voxels"


def test_warning_lines():
    failed = gate_record({"restoration_mse": 0.05, "batch_mean_mse": 0.05, "image_mean_mse": 0.05,
                          "clean_identity_mse": 0.01}, GateSettings(), "all voxels")
    passed = {**failed, "passed": True}
    assert warning_line({"pretext_gate": passed}, "w") is None
    line = warning_line({"pretext_gate": failed}, "w")
    assert line.startswith("warning: w: ") and "failed the restoration quality gate" in line and "\n" not in line
    assert "record no restoration quality gate" in warning_line({"source": "converted"}, "w")
    assert warning_line({"init_gate": {"init": "scratch"}}, "w") is None
    assert "fine-tuned from" in warning_line({"init_gate": failed}, "w")
    assert warning_line({"init_gate": passed}, "w") is None
    assert "record no" in warning_line({"init_gate": None}, "w")
    assert "fine-tuned weights record no" in warning_line({"source": "genesis_jax finetune"}, "w")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gate_pretrain")
    summary = pretrain(tiny_config("--config.max_steps=4"), workdir, transform=noise_transform)
    return summary, workdir


def test_record_in_summary_and_weights(pretrained):
    summary, workdir = pretrained
    record = summary["pretext_gate"]
    assert json.loads((workdir / "summary.json").read_text())["pretext_gate"] == record
    assert read_metadata(workdir / "weights")["pretext_gate"] == record
    assert summary["pretext"] == "genesis" and record["max_ratio"] == 0.7 and record["max_clean_mse"] == 0.005
    expected = (record["restoration_mse"] <= 0.7 * record["batch_mean_mse"]
                and record["clean_identity_mse"] <= 0.005)
    assert record["passed"] == expected
    assert all(np.isfinite(record[k]) for k in ("restoration_mse", "batch_mean_mse", "image_mean_mse",
                                                "clean_identity_mse"))
    assert record["image_mean_mse"] <= record["batch_mean_mse"] + 1e-7  # per-image means fit at least as well
    validation = (workdir / "validation.csv").read_text().splitlines()[0].split(",")
    assert {"val_restoration_mse", "val_batch_mean_mse", "val_image_mean_mse", "val_clean_identity_mse",
            "val_gate_passed"} <= set(validation)


def test_finetune_init_prints_one_warning_and_records_the_init_gate(pretrained, tmp_path, capsys):
    """4 steps of denoising do not pass the gate: ``finetune --init`` says so in one line, and the fine-tuned
    weights carry the init's record, so ``evaluate`` can say it too."""
    summary, workdir = pretrained
    assert not summary["pretext_gate"]["passed"]
    rc = main(["finetune", "--config=finetune/ncc:tiny", f"--init={workdir / 'weights'}", f"--workdir={tmp_path}",
               "--config.num_devices=1", "--config.logging.progress=False", "--config.logging.tensorboard=False",
               "--config.max_steps=1"])
    assert rc == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and "failed the restoration quality gate" in lines[0], lines
    assert read_metadata(tmp_path / "weights")["init_gate"] == summary["pretext_gate"]
    assert "fine-tuned from pre-trained weights that failed" in weights_warning(tmp_path / "weights")

    rc = main(["evaluate", "--config=finetune/ncc:tiny", f"--weights={tmp_path}", f"--out={tmp_path / 'eval'}",
               "--config.logging.progress=False"])
    assert rc == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and "fine-tuned from pre-trained weights that failed" in lines[0], lines


def test_al_warns_about_its_init_in_one_line(pretrained, capsys):
    import ml_collections

    from genesis_jax.cli import al

    _, workdir = pretrained
    al._warn_about_init(ml_collections.ConfigDict({"init": str(workdir / "weights")}))
    al._warn_about_init(ml_collections.ConfigDict({"init": ""}))  # a fresh encoder: nothing to say
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "quality gate" in lines[0], lines
