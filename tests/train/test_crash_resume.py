"""Crash suite: real ``genesis-jax pretrain`` / ``finetune`` processes SIGKILLed at each phase boundary (startup,
mid-step, right after a best checkpoint is committed, mid periodic save, during the weights export), a re-export
killed midway, a corrupt latest checkpoint and a full disk; after each, rerunning the same command finishes with
the parameter fingerprint of one uninterrupted run.

The kills are real: the process SIGKILLs itself at the named point (``GENESIS_JAX_CRASH_AT``, a test-only hook in
genesis_jax.workdir). To stay cheap, each command's kills follow each other in ONE workdir (every rerun resumes from
what the previous kill left and is killed at the next phase), all runs share the persistent compilation cache, and
the configs are the tiniest ones (1 device).
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from genesis_jax.models.weights import is_weights_dir, load_weights
from tests.train.helpers import REPO, TINY_OVERRIDES, driver_env

CRASH_DRIVER = Path(__file__).with_name("crash_driver.py")
PRETRAIN = ["pretrain", "--config=pretrain/genesis_chest_ct:tiny", *TINY_OVERRIDES,
            "--config.max_steps=12", "--config.checkpoint.every_steps=8", "--config.checkpoint.async_save=True"]
FINETUNE = ["finetune", "--config=finetune/ncc:tiny", "--init=scratch", "--config.num_devices=1",
            "--config.logging.progress=False", "--config.logging.tensorboard=False", "--config.max_epochs=3",
            "--config.checkpoint.async_save=True"]
PHASES = ["startup", "step@3", "best@1", "periodic_save@1", "export"]


def run(command: list[str], workdir: Path, crash_at: str | None = None, **spec) -> subprocess.CompletedProcess:
    env = driver_env(devices=1)
    env.pop("GENESIS_JAX_CRASH_AT", None)
    if crash_at:
        env["GENESIS_JAX_CRASH_AT"] = crash_at
    argv = [*command, f"--workdir={workdir}"]
    return subprocess.run([sys.executable, str(CRASH_DRIVER), json.dumps({"argv": argv, **spec})], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


def fingerprint(command: list[str], workdir: Path, proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"rc {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads((workdir / "summary.json").read_text())["params_fingerprint"]


def killed(proc: subprocess.CompletedProcess, phase: str) -> None:
    assert proc.returncode == -signal.SIGKILL, f"{phase}: not killed (rc {proc.returncode}):\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """``reference(command)``: the fingerprint of one uninterrupted run of that command (run once per module)."""
    cache: dict[str, str] = {}

    def get(cmd: list[str]) -> str:
        if cmd[0] not in cache:
            workdir = tmp_path_factory.mktemp(f"{cmd[0]}_reference")
            cache[cmd[0]] = fingerprint(cmd, workdir, run(cmd, workdir))
        return cache[cmd[0]]

    return get


def leaf_digests(tree) -> list[str]:
    return [hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest() for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("cmd", [PRETRAIN, FINETUNE], ids=["pretrain", "finetune"])
def test_sigkill_at_every_phase_then_rerun_finishes_with_the_same_parameters(cmd, reference, tmp_path):
    workdir = tmp_path / "run"
    for phase in PHASES:
        proc = run(cmd, workdir, crash_at=phase)
        killed(proc, phase)
        if phase == "best@1":  # the case: best/<N> committed, no periodic checkpoint yet
            assert [p.name for p in (workdir / "best").iterdir() if p.name.isdigit()]
            assert not [p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
        if phase == "export":
            assert not (workdir / "weights").exists()
    assert fingerprint(cmd, workdir, run(cmd, workdir)) == reference(cmd)
    before = load_weights(workdir / "weights")[0]

    # A kill during a RE-export (rerunning the finished command) leaves the complete previous weights.
    killed(run(cmd, workdir, crash_at="export"), "re-export")
    assert is_weights_dir(workdir / "weights")
    assert leaf_digests(load_weights(workdir / "weights")[0]) == leaf_digests(before)


def test_corrupt_latest_checkpoint_falls_back_to_the_one_before(reference, tmp_path):
    workdir = tmp_path / "run"
    assert fingerprint(PRETRAIN, workdir, run(PRETRAIN, workdir)) == reference(PRETRAIN)
    for chunk in (workdir / "checkpoints" / "12" / "state").rglob("d/*"):
        chunk.write_bytes(b"\0garbage")
    proc = run(PRETRAIN, workdir)
    assert fingerprint(PRETRAIN, workdir, proc) == reference(PRETRAIN)
    assert "checkpoint step 12 cannot be restored" in proc.stderr and "resumed from step 8" in proc.stderr
    assert [p.name.split("-")[0] for p in (workdir / "corrupt_checkpoints").iterdir()] == ["12"]


def test_disk_full_stops_with_one_line_and_resumes_once_space_is_back(reference, tmp_path):
    workdir = tmp_path / "run"
    proc = run(PRETRAIN, workdir, disk_full_from_step=12)  # checkpoint 8 fits, step 12's does not
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("pretrain: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert errors[0].startswith(f"genesis-jax pretrain: no space left on {workdir}: ") and (
        "the last intact checkpoint is step 8" in errors[0]), errors
    assert not (workdir / "weights").exists()
    proc = run(PRETRAIN, workdir)  # space is back
    assert "resumed from step 8" in proc.stderr
    assert fingerprint(PRETRAIN, workdir, proc) == reference(PRETRAIN)
