"""``genesis-jax pretrain --config=pretrain/mim:tiny`` and ``pretrain/genesis_mim:tiny`` as a user runs them: a real
process SIGKILLed mid-step after a checkpoint, rerun with the same command, ends with the parameters of an
uninterrupted run (with ``--config.pretext.mask_fill=token`` the learned mask token too); the exported weights
record the gate, hold the network alone and initialise ``genesis-jax finetune --init``."""

import json

import jax
import pytest

from genesis_jax.cli import main
from genesis_jax.models.weights import load_weights, read_metadata
from tests.train.helpers import TINY_OVERRIDES
from tests.train.test_crash_resume import fingerprint, killed, run


def command(spec: str) -> list[str]:
    return ["pretrain", f"--config=pretrain/{spec}:tiny", *TINY_OVERRIDES, "--config.max_steps=12",
            "--config.checkpoint.every_steps=8", "--config.checkpoint.async_save=False",  # step 8 on disk at step 10
            "--config.logging.preview_every_steps=12"]


TOKEN = ["--config.pretext.mask_fill=token"]


@pytest.mark.parametrize("spec,extra", [("mim", []), pytest.param("mim", TOKEN, id="mim-token"),
                                        pytest.param("genesis_mim", [], marks=pytest.mark.slow)])  # same path, longer
def test_killed_run_resumes_to_the_uninterrupted_parameters_and_its_weights_init_finetuning(spec, extra, tmp_path,
                                                                                           capsys):
    cmd = [*command(spec), *extra]
    reference = fingerprint(cmd, tmp_path / "reference", run(cmd, tmp_path / "reference"))
    reference_summary = json.loads((tmp_path / "reference" / "summary.json").read_text())
    workdir = tmp_path / "run"
    killed(run(cmd, workdir, crash_at="step@10"), "step@10")  # checkpoint 8 written, step 10 in flight
    proc = run(cmd, workdir)
    assert "resumed from step 8" in proc.stderr, proc.stderr[-3000:]
    assert fingerprint(cmd, workdir, proc) == reference
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["pretext"] == spec and read_metadata(workdir / "weights")["pretext_gate"] == summary["pretext_gate"]
    assert (workdir / "previews" / "step_0000012.png").is_file()
    # a learned mask token resumes bit for bit with the network, and stays out of the exported network weights
    assert summary.get("pretext_params_fingerprint") == reference_summary.get("pretext_params_fingerprint")
    assert ("pretext_params_fingerprint" in summary) == bool(extra)
    exported = jax.tree_util.tree_flatten_with_path(load_weights(workdir / "weights")[0])[0]
    assert exported and not any("mask_token" in jax.tree_util.keystr(path) for path, _ in exported)

    rc = main(["finetune", "--config=finetune/lcs:tiny", f"--init={workdir / 'weights'}",
               f"--workdir={tmp_path / 'finetune'}", "--config.num_devices=1", "--config.logging.progress=False",
               "--config.logging.tensorboard=False", "--config.max_steps=1"])
    assert rc == 0
    report = json.loads((tmp_path / "finetune" / "transfer_report.json").read_text())
    assert report["loaded"] and any("encoder" in p for p in report["loaded"]), report
    capsys.readouterr()
