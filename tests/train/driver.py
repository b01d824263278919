"""Subprocess driver for the training tests: ``python driver.py '<json spec>'`` runs one tiny pre-training and
prints its summary as the last stdout line.

spec: workdir, overrides (--config.x=y), and optionally coordinator/num_processes/process_id (multi-host on
127.0.0.1 with gloo) and record_reads (train on num_train / num_val synthetic cubes and write the cube indices
this process read to that path).
"""

import json
import sys

spec = json.loads(sys.argv[1])

from genesis_jax.train.distributed import initialize  # noqa: E402  (before any JAX computation)

initialize(spec.get("coordinator"), spec.get("num_processes"), spec.get("process_id"), initialization_timeout=120)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from tests.train.helpers import enable_compile_cache, noise_transform, tiny_config  # noqa: E402

jax.config.update("jax_default_prng_impl", "rbg")
enable_compile_cache()

from genesis_jax.train.pretrain import pretrain  # noqa: E402


class RecordingSource:
    """Cube i is constant i / n, and every read index is remembered (to prove which shard a process consumed)."""

    def __init__(self, n: int, shape: tuple[int, ...]):
        self.n, self.shape, self.reads = n, shape, []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        self.reads.append(int(i))
        return np.full(self.shape, (int(i) + 1) / (self.n + 1), np.float32)


config = tiny_config(*spec["overrides"])
kwargs = {}
if spec.get("record_reads"):
    shape = tuple(config.input_shape)[:-1]
    kwargs["train_source"] = RecordingSource(spec["num_train"], shape)
    kwargs["val_source"] = RecordingSource(spec["num_val"], shape)
summary = pretrain(config, spec["workdir"], transform=noise_transform, **kwargs)
if spec.get("record_reads"):
    with open(spec["record_reads"], "w") as f:
        json.dump(kwargs["train_source"].reads, f)
print(json.dumps(summary))
