"""Subprocess driver for the crash tests: ``python crash_driver.py '<json spec>'`` runs one real ``genesis-jax``
command line (spec ``argv``) in this process, so the test can SIGKILL it (``GENESIS_JAX_CRASH_AT`` in its
environment, see genesis_jax.workdir.crash_point) and rerun the same command.

Test-only substitutions, so the tiny runs stay cheap: pre-training restores a denoising task instead of the
published deformations (``tests.train.helpers.noise_transform``), and with ``disk_full_from_step`` every
checkpoint of that step or later fails with ENOSPC in orbax's background writer (a fault-injecting writer standing
in for a full disk, since a small tmpfs cannot be mounted everywhere the tests run).
"""

import errno
import json
import os
import sys
from pathlib import Path

spec = json.loads(sys.argv[1])

import jax  # noqa: E402

from tests.train.helpers import enable_compile_cache, noise_transform  # noqa: E402

jax.config.update("jax_default_prng_impl", "rbg")
enable_compile_cache()

import orbax.checkpoint as ocp  # noqa: E402

import genesis_jax.train.pretrain as pretrain_module  # noqa: E402
from genesis_jax.cli import main  # noqa: E402

pretrain_module.default_transform = lambda transforms_config, **_: noise_transform

if spec.get("disk_full_from_step") is not None:
    from_step = int(spec["disk_full_from_step"])
    real_save_fn = ocp.JsonCheckpointHandler._save_fn

    async def failing_save_fn(self, x, directory):
        step = Path(directory).parent.name.split(".")[0]  # <root>/<step>.orbax-checkpoint-tmp/<item>
        if step.isdigit() and int(step) >= from_step:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
        return await real_save_fn(self, x, directory)

    ocp.JsonCheckpointHandler._save_fn = failing_save_fn

sys.exit(main(spec["argv"]))
