"""Multi-host start-up: ``jax.distributed.initialize`` from explicit arguments (the CLI's ``--coordinator_address
--num_processes --process_id``) or the usual environment variables, before anything touches a JAX backend.

Environment: ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` (and ``JAX_LOCAL_DEVICE_IDS``,
read by JAX itself); on SLURM, Open MPI or Cloud TPU clusters JAX detects everything by itself when
``GENESIS_JAX_DISTRIBUTED=auto``. On CPU the cross-process collectives use gloo.

Also the two host-side agreements the training loops need: ``any_process`` (one decision for all processes) and
``to_host`` (a global array gathered to NumPy).
"""

from __future__ import annotations

import os
from typing import Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils


class DistributedError(ValueError):
    """Incomplete or inconsistent multi-host settings; the message names the flag or variable."""


def settings_from(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, object] | None:
    """The ``jax.distributed.initialize`` arguments these flags and variables ask for; ``{}`` for cluster
    auto-detection, None for a single-process run."""
    env = os.environ if env is None else env
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    given = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    if all(v is None for v in given.values()):
        return {} if env.get("GENESIS_JAX_DISTRIBUTED") == "auto" else None
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise DistributedError(
            f"multi-host run needs --coordinator_address, --num_processes and --process_id (or JAX_COORDINATOR_ADDRESS,"
            f" JAX_NUM_PROCESSES, JAX_PROCESS_ID); missing: {', '.join(missing)}"
        )
    if not 0 <= int(process_id) < int(num_processes):
        raise DistributedError(f"--process_id={process_id} must lie in [0, --num_processes={num_processes})")
    return given


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    initialization_timeout: int = 300,
) -> bool:
    """Join the multi-controller runtime when flags or environment ask for it; returns True when it did.
    Must run before the first JAX computation."""
    settings = settings_from(coordinator_address, num_processes, process_id)
    if settings is None:
        return False
    if jax.distributed.is_initialized():
        return True
    # Gloo gives XLA:CPU cross-process collectives; GPU/TPU backends ignore this option.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**settings, initialization_timeout=initialization_timeout)
    return True


def any_process(flags: list[bool]) -> list[bool]:
    """Element-wise OR of host-side decisions over processes, so every process takes the same branch."""
    if jax.process_count() == 1:
        return flags
    gathered = multihost_utils.process_allgather(np.asarray(flags, np.int32))
    return [bool(v) for v in np.asarray(gathered).reshape(jax.process_count(), -1).any(axis=0)]


def to_host(x: jax.Array) -> np.ndarray:
    """A global array as one NumPy array on every process (gathered across processes when it spans them); a host
    array (e.g. weights read from disk) as it is."""
    if jax.process_count() == 1 or not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
