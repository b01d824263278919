"""pretrain/resenc_genesis: nnU-Net's ResEnc-L under the Models Genesis task. The full-size steps (64x64x32 cubes and
nnssl's 160^3 patches) are shape-checked with jax.eval_shape; the :tiny variant trains through the CLI, its weights
convert into an nnU-Net checkpoint, that checkpoint converts back, and fine-tuning starts from it (--init)."""

import json

import numpy as np
import pytest

from genesis_jax.cli import main
from tests.train.test_configs import test_full_size_step_shapes as full_size_step_shapes


@pytest.mark.parametrize("spec", ["resenc_genesis", "resenc_genesis:nnssl"])
def test_full_size_step_shapes(spec):
    full_size_step_shapes(spec)


@pytest.mark.slow
def test_tiny_pretraining_exports_for_nnunet_and_the_checkpoint_inits_finetuning(tmp_path, capsys):
    overrides = ["--config.global_batch_size=8", "--config.steps_per_epoch=2", "--config.validation_batches=1",
                 "--config.max_steps=2", "--config.logging.progress=False", "--config.logging.tensorboard=False",
                 "--config.logging.preview_every_steps=0", "--config.max_step_traces=1"]
    assert main(["pretrain", "--config=pretrain/resenc_genesis:tiny", f"--workdir={tmp_path / 'run'}", *overrides]) == 0
    capsys.readouterr()  # pretrain prints one human line; the summary is the workdir's summary.json
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["step"] == 2 and np.isfinite(summary["final_loss"]) and summary["weights"]
    pytest.importorskip("torch", reason="the nnU-Net export needs torch")
    assert main(["convert", f"--from={summary['weights']}", f"--to={tmp_path / 'resenc.pth'}", "--format=nnunet",
                 "--patch-size=16,16,8"]) == 0
    assert "pre-training patch [16, 16, 8]" in capsys.readouterr().out
    assert main(["convert", f"--from={tmp_path / 'resenc.pth'}", f"--to={tmp_path / 'back'}"]) == 0
    capsys.readouterr()
    assert main(["finetune", "--config=finetune/resenc:lcs,tiny", f"--workdir={tmp_path / 'lcs'}",
                 f"--init={tmp_path / 'back'}", "--config.max_steps=2", "--config.logging.progress=False",
                 "--config.num_devices=1"]) == 0
    report = json.loads((tmp_path / "lcs" / "transfer_report.json").read_text())
    loaded = {p.split("/")[1] for p in report["loaded"]}
    assert {"encoder_stem", "encoder_0", "encoder_2", "decoder_0"} <= loaded and "head" not in loaded
