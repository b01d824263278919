"""Shared pieces of the training tests: a tiny pre-training config, a cheap on-device transform, the persistent
compilation cache, and a runner for subprocess drivers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("driver.py")
COMPILE_CACHE = Path(os.environ.get("GENESIS_TEST_COMPILE_CACHE", "/tmp/genesis_jax_test_compile_cache"))

REFERENCE_STEPS = 12

TINY_OVERRIDES = [
    "--config.model.base_width=2",
    "--config.model.depth=2",
    "--config.global_batch_size=8",
    "--config.steps_per_epoch=4",
    "--config.validation_batches=1",
    "--config.logging.progress=False",
    "--config.logging.tensorboard=False",
    "--config.logging.preview_every_steps=0",
    "--config.max_step_traces=1",
]


def tiny_config(*overrides: str):
    from genesis_jax.config_loader import load_config

    return load_config("pretrain/genesis_chest_ct:tiny", [*TINY_OVERRIDES, *overrides])


def noise_transform(key: jax.Array, cubes: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A cheap restoration task (denoising) standing in for the published deformations in loop tests."""
    return jnp.clip(cubes + 0.2 * jax.random.normal(key, cubes.shape), 0.0, 1.0), cubes


def enable_compile_cache() -> None:
    """Share compiled executables between the test process and its subprocesses (the same tiny steps recur)."""
    jax.config.update("jax_compilation_cache_dir", str(COMPILE_CACHE))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def driver_command(workdir: Path, *overrides: str, extra: dict | None = None) -> list[str]:
    spec = {"workdir": str(workdir), "overrides": [*TINY_OVERRIDES, *overrides], **(extra or {})}
    return [sys.executable, str(DRIVER), json.dumps(spec)]


def driver_env(devices: int = 8) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_driver(workdir: Path, *overrides: str, devices: int = 8, timeout: float = 300, extra: dict | None = None
               ) -> tuple[dict, subprocess.CompletedProcess]:
    proc = subprocess.run(driver_command(workdir, *overrides, extra=extra), env=driver_env(devices), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"driver failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc


def losses(workdir: Path) -> dict[int, float]:
    from genesis_jax.train.metrics_log import read_metrics

    return {int(r["step"]): r["loss"] for r in read_metrics(workdir)}


def assert_same_curve(a: dict[int, float], b: dict[int, float], rtol: float = 1e-5) -> None:
    assert sorted(a) == sorted(b), (sorted(a), sorted(b))
    np.testing.assert_allclose([a[s] for s in sorted(a)], [b[s] for s in sorted(b)], rtol=rtol, atol=1e-7)
