"""Preemption and faults, in real subprocesses: SIGTERM saves a checkpoint and exits cleanly; after kill -9 a restart
resumes from the last checkpoint; checkpoints move between device counts (8 -> 1 -> 8); the stitched loss curve
equals the uninterrupted reference run's."""

import json
import signal
import subprocess
import time
from pathlib import Path

from tests.train.helpers import REFERENCE_STEPS, REPO, assert_same_curve, driver_command, driver_env, losses, \
    run_driver


def checkpoint_steps(workdir: Path) -> list[int]:
    root = workdir / "checkpoints"
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []


def start(workdir: Path, devices: int) -> subprocess.Popen:
    overrides = ["--config.max_steps=100000", "--config.checkpoint.every_steps=2", "--config.checkpoint.keep=20",
                 "--config.checkpoint.async_save=True"]
    return subprocess.Popen(driver_command(workdir, *overrides), env=driver_env(devices), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(proc: subprocess.Popen, workdir: Path, beyond: int, timeout: float = 240) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        steps = [s for s in checkpoint_steps(workdir) if s > beyond]
        if steps:
            return steps[0]
        if proc.poll() is not None:
            raise AssertionError(f"driver exited early ({proc.returncode}):\n{proc.communicate()[1][-4000:]}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no checkpoint beyond step {beyond} within {timeout}s")


def test_sigterm_kill9_and_device_count_changes_resume_the_same_curve(reference_run, tmp_path):
    _, reference = reference_run
    workdir = tmp_path / "run"

    # 1. SIGTERM (8 devices): a checkpoint at the step reached, exit code 0, a clear message.
    proc = start(workdir, devices=8)
    wait_for_checkpoint(proc, workdir, beyond=0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-4000:]
    summary = json.loads(out.strip().splitlines()[-1])
    stopped_at = summary["step"]
    assert summary["stopped"] == "preempted" and "SIGTERM received: saved checkpoint at step" in err
    assert checkpoint_steps(workdir)[-1] == stopped_at
    assert stopped_at < REFERENCE_STEPS - 4, "the run went too far before SIGTERM landed"

    # 2. Resume on ONE device from the 8-device checkpoint, then kill -9 right after its next checkpoint.
    proc = start(workdir, devices=1)
    killed_after = wait_for_checkpoint(proc, workdir, beyond=stopped_at)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    last = checkpoint_steps(workdir)[-1]
    assert killed_after <= last < REFERENCE_STEPS

    # 3. Restart on 8 devices from the 1-device checkpoint and finish.
    summary, proc = run_driver(workdir, f"--config.max_steps={REFERENCE_STEPS}", devices=8)
    assert summary["resumed_from"] == last and f"resumed from step {last}" in proc.stdout + proc.stderr
    assert summary["step"] == REFERENCE_STEPS and summary["devices"] == 8

    # The stitched curve (rows after the last checkpoint of the killed run were dropped on resume) equals the
    # uninterrupted run's; steps computed on one device differ only by float summation order.
    assert_same_curve(losses(workdir), losses(reference), rtol=1e-4)
