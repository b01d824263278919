"""Fine-tuning configs and commands: every published task config loads with the published settings and builds its
full-size network (eval_shape only); the tiny variants' data load; `genesis-jax finetune` and `genesis-jax evaluate`
run end to end on CPU."""

import json

import jax
import numpy as np
import pytest

from genesis_jax.cli import main as cli_main
from genesis_jax.config_loader import load_config
from genesis_jax.models import build_model, count_params
from genesis_jax.data.task_data import load_task_data

PUBLISHED = {  # Models Genesis §5.3: optimizer lr, batch, input, early-stopping patience, loss
    "ncc": (1e-3, 24, (64, 64, 32, 1), 10, "bce", "classification"),
    "ncs": (1e-3, 16, (64, 64, 32, 1), 50, "dice", "segmentation"),
    "ecc": (1e-3, 24, (64, 64, 64, 1), 38, "bce", "classification"),
    "lcs": (1e-2, 16, (64, 64, 32, 1), 20, "dice", "segmentation"),
    "bms": (1e-3, 16, (64, 64, 32, 1), 30, "dice", "segmentation"),
}


@pytest.mark.parametrize("task", sorted(PUBLISHED))
def test_published_task_configs(task):
    lr, batch, shape, patience, loss, kind = PUBLISHED[task]
    c = load_config(f"finetune/{task}")
    assert (c.optimizer.name, c.optimizer.learning_rate, c.global_batch_size, tuple(c.input_shape)) == (
        "adam", lr, batch, shape)
    assert (c.early_stopping.patience, c.loss, c.task) == (patience, loss, kind)
    assert (c.schedule.kind, c.schedule.factor, c.schedule.patience, c.schedule.min_lr) == ("plateau", 0.5, 6, 1e-6)
    assert c.data.storage == "tfds"  # the downstream datasets prepared by `genesis-jax data prepare`
    n = count_params(build_model(c.model), (1, *shape))
    # keras Genesis U-Net 16,320,257; the classifier = encoder + Dense 1024 + Dense 1
    assert n == (16_320_257 if kind == "segmentation" else 7_027_776 + 512 * 1024 + 1024 + 1024 + 1)
    tiny = load_config(f"finetune/{task}:tiny")
    assert tiny.model.base_width == 2 and tiny.data.source == "synthetic"


@pytest.mark.parametrize("task, mode", [("ncs", "crops"), ("ncc", "candidates")])
def test_tiny_crop_tasks_cut_crops_from_phantoms(task, mode):
    c = load_config(f"finetune/{task}:tiny")
    data = load_task_data(c)
    assert c.sampling.mode == mode and data.patch_shape is None
    x, y = data.test_arrays
    assert x.shape[1:] == (*c.input_shape[:-1], 1)
    if mode == "crops":
        assert y.shape == x.shape and y.max() == 1  # a nodule mask in every crop
    else:
        assert y.shape == (len(x), 1) and set(np.unique(y)) == {0.0, 1.0}
    assert len(data.train) == 2 * c.sampling.crops_per_volume * (2 if mode == "candidates" else 1)


def test_finetune_and_evaluate_commands(tmp_path, capsys):
    workdir = tmp_path / "ncc"
    rc = cli_main(["finetune", "--config=finetune/ncc:tiny", f"--workdir={workdir}", "--init=scratch",
                   "--config.logging.progress=False", "--config.num_devices=1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "finetune completed: 2 epochs, 4 steps" in out and "auc" in out
    summary = json.loads((workdir / "summary.json").read_text())
    assert set(summary["test"]) == {"auc", "accuracy", "n", "positives"}

    # evaluate that run from its workdir (the weights it evaluated) on the same test set
    rc = cli_main(["evaluate", "--config=finetune/ncc:tiny", f"--weights={workdir}",
                   f"--out={tmp_path / 'eval'}", "--config.logging.progress=False"])
    assert rc == 0
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["metrics"]["n"] == summary["test"]["n"]
    assert report["metrics"]["auc"] == pytest.approx(summary["test"]["auc"], abs=1e-6)


def test_evaluate_segmentation_writes_overlays_and_nifti(tmp_path):
    c = load_config("finetune/lcs:tiny")
    model = build_model(c.model)
    variables = jax.jit(model.init)(jax.random.key(0), np.zeros((1, *c.input_shape), np.float32))
    from genesis_jax.models.weights import save_weights

    save_weights(tmp_path / "w", variables, c.model.to_dict())
    rc = cli_main(["evaluate", "--config=finetune/lcs:tiny", f"--weights={tmp_path / 'w'}",
                   f"--out={tmp_path / 'eval'}", "--save-nifti", "--config.logging.progress=False"])
    assert rc == 0
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    (volume,) = report["metrics"]["per_volume"]
    assert {"dice", "iou", "hd95"} <= set(volume) and "mean_iou" in report["metrics"]["set"]
    assert (tmp_path / "eval" / f"{volume['name']}_overlay.png").is_file()
    import nibabel as nib

    img = nib.load(str(tmp_path / "eval" / f"{volume['name']}_prob.nii.gz"))
    assert img.shape == (48, 48, 32)  # the phantom's grid
    assert not np.allclose(img.affine, np.eye(4))  # the phantom's spacing, not a default


def test_finetune_command_reports_a_bad_init(tmp_path, capsys):
    rc = cli_main(["finetune", "--config=finetune/lcs:tiny", f"--workdir={tmp_path / 'w'}",
                   f"--init={tmp_path / 'missing'}", "--config.logging.progress=False", "--config.num_devices=1"])
    assert rc == 2
    assert "missing" in capsys.readouterr().err
