"""pretrain/resenc_genesis and pretrain/resenc_mim: nnU-Net's ResEnc-L under the Models Genesis task and under masked
image modelling. The full-size steps (64x64x32 cubes and nnssl's 160^3 patches) are shape-checked with
jax.eval_shape and `summary` prints their memory per device; each :tiny variant trains through the CLI, resumes, its
weights convert into an nnU-Net checkpoint, that checkpoint converts back, and fine-tuning starts from it (--init)."""

import json
import re

import numpy as np
import pytest

from genesis_jax.cli import main
from tests.train.test_configs import test_full_size_step_shapes as full_size_step_shapes

SPECS = ["resenc_genesis", "resenc_genesis:nnssl", "resenc_mim", "resenc_mim:nnssl", "resenc_mim:nnssl,bf16"]


@pytest.mark.parametrize("spec", SPECS)
def test_full_size_step_shapes(spec):
    full_size_step_shapes(spec)


def test_mim_at_nnssl_scale_masks_as_nnssl_and_prints_its_memory_per_device(capsys):
    from genesis_jax.config_loader import load_config

    nnssl, genesis = load_config("pretrain/resenc_mim:nnssl"), load_config("pretrain/resenc_mim")
    assert (nnssl.pretext.name, nnssl.pretext.mask_ratio, nnssl.pretext.block_size) == ("mim", 0.75, 16)
    assert (genesis.pretext.mask_ratio, genesis.pretext.block_size) == (0.6, 8) and "transforms" not in genesis
    assert nnssl.model.to_dict() == load_config("pretrain/resenc_genesis:nnssl").model.to_dict()
    layer_outputs = {}
    for spec, dtype in (("resenc_mim:nnssl", "float32"), ("resenc_mim:nnssl,bf16", "bfloat16")):
        assert main(["summary", f"--config=pretrain/{spec}"]) == 0
        out = capsys.readouterr().out
        assert "Total params: 102,348,965" in out
        assert f"per-device batch 2 of (160, 160, 160, 1), compute dtype {dtype}" in out
        assert re.search(r"total [\d.]+ GiB", out)
        layer_outputs[dtype] = float(re.search(r"layer outputs ([\d.]+) GiB", out)[1])
    assert layer_outputs["float32"] > 10
    assert layer_outputs["bfloat16"] == pytest.approx(layer_outputs["float32"] / 2, rel=0.01)


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["resenc_genesis:tiny", "resenc_mim:tiny"])
def test_tiny_pretraining_resumes_exports_for_nnunet_and_the_checkpoint_inits_finetuning(spec, tmp_path, capsys):
    overrides = ["--config.global_batch_size=8", "--config.steps_per_epoch=2", "--config.validation_batches=1",
                 "--config.logging.progress=False", "--config.logging.tensorboard=False",
                 "--config.logging.preview_every_steps=0", "--config.max_step_traces=1"]
    command = ["pretrain", f"--config=pretrain/{spec}", f"--workdir={tmp_path / 'run'}", *overrides]
    assert main([*command, "--config.max_steps=2"]) == 0
    capsys.readouterr()  # pretrain prints one human line; the summary is the workdir's summary.json
    first = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert first["step"] == 2 and first["resumed_from"] is None
    assert main([*command, "--config.max_steps=4"]) == 0  # the same command, a later end: resumes
    capsys.readouterr()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["resumed_from"] == 2 and summary["step"] == 4
    assert np.isfinite(summary["final_loss"]) and summary["weights"]
    pytest.importorskip("torch", reason="the nnU-Net export needs torch")
    assert main(["convert", f"--from={summary['weights']}", f"--to={tmp_path / 'resenc.pth'}", "--format=nnunet",
                 "--patch-size=16,16,8"]) == 0
    assert "pre-training patch [16, 16, 8]" in capsys.readouterr().out
    assert main(["convert", f"--from={tmp_path / 'resenc.pth'}", f"--to={tmp_path / 'back'}"]) == 0
    capsys.readouterr()
    adaptation = json.loads((tmp_path / "back" / "adaptation.json").read_text())
    assert adaptation["network"] == "resenc_unet" and adaptation["stem"] == ["encoder_stem/conv_0"]
    assert main(["finetune", "--config=finetune/resenc:lcs,tiny", f"--workdir={tmp_path / 'lcs'}",
                 f"--init={tmp_path / 'back'}", "--config.max_steps=2", "--config.logging.progress=False",
                 "--config.num_devices=1"]) == 0
    report = json.loads((tmp_path / "lcs" / "transfer_report.json").read_text())
    loaded = {p.split("/")[1] for p in report["loaded"]}
    assert {"encoder_stem", "encoder_0", "encoder_2", "decoder_0"} <= loaded and "head" not in loaded
