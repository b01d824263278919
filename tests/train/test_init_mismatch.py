"""Weights that do not fully fit at ``--init``: one summarised warning line (the per-array lines only at DEBUG and in
transfer_report.json), an error with ``config.init.strict``; the fine-tuned keras-variant model exports to .pt."""

import json
import logging

import jax
import numpy as np
import pytest

from genesis_jax.cli import main as cli_main
from genesis_jax.config_loader import load_config
from genesis_jax.models import adaptation_record, build_model
from genesis_jax.models.weights import save_weights
from genesis_jax.train.transfer import TransferError, transfer_variables



def _variables(cfg, shape, seed=0):
    return jax.tree.map(np.asarray, jax.jit(build_model(cfg).init)(jax.random.key(seed), np.zeros((1, *shape),
                                                                                                  np.float32)))


@pytest.fixture(scope="module")
def lcs_tiny():
    return load_config("finetune/lcs:tiny")


@pytest.fixture(scope="module")
def pytorch_pretrained(lcs_tiny, tmp_path_factory):
    """A 'pytorch'-variant pre-training export of the lcs:tiny network (whose config is the 'keras' variant)."""
    cfg = dict(lcs_tiny.model.to_dict(), variant="pytorch")
    directory = tmp_path_factory.mktemp("pre") / "weights"
    save_weights(directory, _variables(cfg, lcs_tiny.input_shape, seed=1), cfg, {"source": "genesis_jax pretrain"})
    return directory, cfg


def _transfer_records(caplog):
    """The INFO-or-above lines a transfer logged (each line of a report starts 'initialisation from' or '  ')."""
    return [r for r in caplog.records if r.name.startswith("genesis_jax") and r.levelno >= logging.INFO
            and r.message.startswith(("initialisation from", "  "))]


def test_variant_mismatch_is_one_warning_line_and_strict_refuses(lcs_tiny, pytorch_pretrained, caplog):
    _, source_cfg = pytorch_pretrained
    target_cfg = lcs_tiny.model.to_dict()
    source = _variables(source_cfg, lcs_tiny.input_shape, seed=1)
    target = _variables(target_cfg, lcs_tiny.input_shape)
    kwargs = dict(target_record=adaptation_record(target_cfg), source_record=adaptation_record(source_cfg),
                  source_name="pre")
    variables, report = transfer_variables(target, source, "segmentation", **kwargs)
    assert not report.clean and len(report.unexpected_unused) == 2 * (target_cfg["depth"] - 1)  # up kernel + bias
    with caplog.at_level(logging.INFO):
        report.log()
    (record,) = _transfer_records(caplog)
    assert record.levelno == logging.WARNING
    assert "NOT a full fit: the source is the 'pytorch' variant, this network the 'keras' variant" in record.message
    assert "source arrays have no place in this network (decoder_0/up)" in record.message
    assert "config.init.strict=True" in record.message and "\n" not in record.message
    np.testing.assert_array_equal(variables["params"]["encoder_0"]["conv_0"]["kernel"],
                                  source["params"]["encoder_0"]["conv_0"]["kernel"])
    with pytest.raises(TransferError, match="NOT a full fit: the source is the 'pytorch' variant"):
        transfer_variables(target, source, "segmentation", strict=True, **kwargs)
    # a full fit stays one INFO line
    caplog.clear()
    _, same = transfer_variables(target, _variables(target_cfg, lcs_tiny.input_shape, seed=1), "segmentation",
                                 target_record=adaptation_record(target_cfg), strict=True)
    with caplog.at_level(logging.INFO):
        same.log()
    (record,) = _transfer_records(caplog)
    assert record.levelno == logging.INFO and "NOT" not in record.message


def test_other_input_channels_leave_the_stem_new_with_a_warning(lcs_tiny):
    source_cfg = lcs_tiny.model.to_dict()
    two = dict(source_cfg, in_channels=2)
    shape = (*lcs_tiny.input_shape[:-1], 2)
    source = _variables(source_cfg, lcs_tiny.input_shape, seed=1)
    variables, report = transfer_variables(_variables(two, shape), source, "segmentation",
                                           target_record=adaptation_record(two),
                                           source_record=adaptation_record(source_cfg))
    assert report.mismatched == ["params/encoder_0/conv_0/kernel (3, 3, 3, 2, 2) <- (3, 3, 3, 1, 2) (stem: another "
                                 "number of input channels)"]
    assert "1 of another shape, left new" in report.summary()
    np.testing.assert_array_equal(variables["params"]["encoder_0"]["conv_1"]["kernel"],
                                  source["params"]["encoder_0"]["conv_1"]["kernel"])
    with pytest.raises(TransferError, match=r"encoder_0/conv_0/kernel has shape \(3, 3, 3, 1, 2\)"):
        transfer_variables(_variables(two, shape), source, "segmentation", strict=True,
                           target_record=adaptation_record(two), source_record=adaptation_record(source_cfg))


def test_finetune_from_another_variant_warns_once_strict_fails_and_the_result_exports(pytorch_pretrained, tmp_path,
                                                                                     caplog, capsys):
    pytest.importorskip("torch", reason="the .pt export needs the 'torch' extra")
    weights, _ = pytorch_pretrained
    common = ["finetune", "--config=finetune/lcs:tiny", f"--init={weights}", "--config.logging.progress=False",
              "--config.num_devices=1"]
    rc = cli_main([*common, f"--workdir={tmp_path / 'strict'}", "--config.init.strict=True"])
    assert rc == 2 and "NOT a full fit: the source is the 'pytorch' variant" in capsys.readouterr().err

    workdir = tmp_path / "ft"
    with caplog.at_level(logging.INFO):
        assert cli_main([*common, f"--workdir={workdir}", "--config.max_steps=1"]) == 0
    (record,) = _transfer_records(caplog)  # one line, not one per array
    assert record.levelno == logging.WARNING and "decoder_0/up" in record.message
    assert record.message.startswith(f"initialisation from {weights} (genesis_jax pretrain): 36 arrays loaded")
    report = json.loads((workdir / "transfer_report.json").read_text())
    assert report["source_record_from"].endswith("adaptation.json") and report["source_record"]["variant"] == "pytorch"
    assert "params/decoder_0/up/kernel" in report["unused"]
    # the fine-tuned (keras-variant) model exports to PyTorch
    capsys.readouterr()
    assert cli_main(["convert", f"--from={workdir / 'weights'}", f"--to={tmp_path / 'ft.pt'}"]) == 0
    assert "keras variant" in capsys.readouterr().out and (tmp_path / "ft.pt").is_file()
