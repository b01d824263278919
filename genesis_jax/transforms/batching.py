"""Per-sample work over a batch: a table lookup whose vmap is one flat gather, and each device's own samples.

Under ``vmap`` a lookup ``table[index]`` of a batched table becomes an XLA gather with batch dimensions; on XLA:CPU
that was 3x (a 10,000-entry table, 131k lookups) to 30x (the same lookup fed by the shuffle's ownership map) slower
than one gather from the flattened tables with per-sample offsets, which is what ``take`` does when vmapped.

That flat gather (and the scatters of the transforms) mixes every sample's rows, so XLA's partitioner cannot see
that a device's samples only read that device's rows: over a batch sharded across devices it all-gathered the
tables onto every device (six all-gathers, 1,164,288 bytes per device for a step on 8 cubes of 16x16x8 over 8
devices). :func:`per_device` runs a per-sample computation inside ``shard_map`` when the caller has set a mesh with
:func:`shard_samples_over` (the train step does, around ``prepare``), so each device transforms its own samples
with their own keys (sample i keeps ``split(key, B)[i]``: the same values as unsharded) and nothing crosses devices.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P


def materialise(array: jax.Array) -> jax.Array:
    """``array``, as the output of a scatter: XLA does not fuse a scatter into its consumers, so a small array that
    is expensive to compute (hashes) and read many times is computed once. (``lax.optimization_barrier`` does not
    survive to XLA's fusion passes on CPU.) Costs one pass over ``array``: use it on small arrays only."""
    flat = array.reshape(-1)
    position = jax.lax.iota(jnp.int32, flat.shape[0])
    out = jnp.zeros_like(flat).at[position].set(flat, indices_are_sorted=True, unique_indices=True)
    return out.reshape(array.shape)


@custom_vmap
def take(table: jax.Array, index: jax.Array) -> jax.Array:
    """``table[index]`` for a 1-D ``table`` and integer ``index`` of any shape (indices must be in range).

    The table is materialised first: otherwise XLA may fuse the table's producer (hashes of the window index, for
    the shuffle) into the gather and recompute it for every lookup, ~30x slower on XLA:CPU.
    """
    return materialise(table).at[index].get(mode="promise_in_bounds")


@take.def_vmap
def _take_vmap(axis_size: int, in_batched: list[bool], table: jax.Array, index: jax.Array):
    table_batched, index_batched = in_batched
    if not table_batched:
        return take(table, index), index_batched
    if not index_batched:
        index = jnp.broadcast_to(index, (axis_size, *index.shape))
    offset = jnp.arange(axis_size, dtype=index.dtype) * table.shape[1]
    flat_index = index + offset.reshape((axis_size,) + (1,) * (index.ndim - 1))
    return take(table.reshape(-1), flat_index), True


def shard_samples_over(mesh: Mesh | None) -> contextlib.AbstractContextManager:
    """A context (usable inside ``jax.jit``) under which :func:`per_device` splits its samples over ``mesh``'s
    devices; ``None``: a no-op. The train step traces ``prepare`` under it."""
    return contextlib.nullcontext() if mesh is None else jax.sharding.use_abstract_mesh(mesh.abstract_mesh)


def device_mesh_size() -> int:
    """Devices of the mesh set by :func:`shard_samples_over` (1 when none is set)."""
    mesh = jax.sharding.get_abstract_mesh()
    return 1 if mesh.empty else int(mesh.size)


def per_device(fn: Callable[..., Any], *batched: Any) -> Any:
    """``fn(*batched)`` with each device computing only its own samples: under :func:`shard_samples_over` (the
    train step's mesh), a ``shard_map`` splits the leading (batch) axis of every array in ``batched`` and of the
    outputs over all mesh axes; with no mesh, one device, or a batch that does not split evenly, ``fn(*batched)``.

    ``fn`` must be per-sample (output sample i depends only on input sample i, e.g. a vmap or map over per-sample
    keys and arrays), so both forms give the same values: pass ``jax.random.split(key, B)``, not the batch key.
    """
    mesh = jax.sharding.get_abstract_mesh()
    batch = jax.tree.leaves(batched)[0].shape[0]
    if mesh.empty or mesh.size == 1 or batch % mesh.size:
        return fn(*batched)
    split = P(tuple(mesh.axis_names))
    # check_vma off: fn holds no collectives, and its loops' carries start from constants (replicated) that its
    # per-sample values make varying, which the check would reject
    return jax.shard_map(fn, mesh=mesh, in_specs=split, out_specs=split, check_vma=False)(*batched)
