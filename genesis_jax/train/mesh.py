"""Device mesh and shardings for data-parallel training.

One mesh axis, ``data``: each batch is split along its first axis over every device of every process, parameters
and optimizer state are replicated. Under ``jax.jit`` this is the current form of pmap-style data parallelism: XLA
inserts the gradient all-reduce, and reductions over the batch axis (the loss mean, BatchNorm statistics) are taken
over the global batch.
"""

from __future__ import annotations

import jax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D ``data`` mesh over all devices (or the first ``num_devices`` of a single process)."""
    devices = jax.devices()
    if num_devices is not None:
        if jax.process_count() > 1 and num_devices != len(devices):
            raise ValueError(
                f"num_devices={num_devices}: a multi-process run uses every device ({len(devices)}); leave it unset"
            )
        if not 1 <= num_devices <= len(devices):
            raise ValueError(f"num_devices={num_devices}: this host has {len(devices)} device(s)")
        devices = devices[:num_devices]
    # Auto axes: XLA propagates the batch sharding through the step (vmaps over per-sample keys and indices inside
    # the transforms mix sharded and replicated operands, which explicit-sharding mode rejects).
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Split the leading (batch) axis over the ``data`` axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """The same full copy on every device."""
    return NamedSharding(mesh, P())


def resolve_batch_size(mesh: Mesh, per_device: int | None, global_size: int | None) -> int:
    """The global batch: ``global_size`` when given, else ``per_device`` times the mesh size (the published batch
    of 6 then scales with the devices). Raises naming the fields when it does not split over devices and processes."""
    n = mesh.devices.size
    if global_size:
        size = int(global_size)
    elif per_device:
        size = int(per_device) * n
    else:
        raise ValueError("set config.per_device_batch_size or config.global_batch_size")
    if size % n:
        raise ValueError(f"config.global_batch_size={size} does not divide over the {n} devices of the mesh")
    if size % jax.process_count():
        raise ValueError(f"global batch {size} does not divide over {jax.process_count()} processes")
    return size


def local_batch_size(global_size: int) -> int:
    """This process's share of the global batch."""
    return global_size // jax.process_count()
