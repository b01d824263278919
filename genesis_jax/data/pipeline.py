"""grain pipelines: sharded pre-training cubes, fine-tuning patches, and global device batches.

Order and sharding (both pipelines). The GLOBAL sequence of examples is fixed by the seed alone: epoch e is a
seeded permutation of the source (a new one per epoch), epochs follow each other, and the sequence is cut into
global batches of ``batch_size * shard_count``. Process p of P takes global positions p, p + P, p + 2P, ... and
batches them by ``batch_size``. Hence the examples of global step t are the same for any number of processes;
what changes with P is only their arrangement inside the global batch (process-major), which a mean loss and
batch-wide BatchNorm statistics do not see. Per-example randomness (patch positions) is keyed by the global
position, so it does not depend on P either. A finite run (``num_epochs``) drops the final partial global batch so
every process yields the same number of batches.

``worker_count > 0`` (pre-training) decodes in grain worker processes: grain then splits the elements among the
workers, so the order is deterministic for a given seed AND worker count, and differs from worker_count=0; keep
it fixed across a run and its restarts.

State: the iterators are grain ``DatasetIterator``s; ``get_state()`` / ``set_state()`` restore them exactly (the
next batch after a restore is the batch an uninterrupted iterator gives), including with prefetch threads.

``global_batch`` turns each process' local batch into global ``jax.Array``s with
``jax.make_array_from_process_local_data``. ``cube_source`` / ``volume_source`` (genesis_jax.data.sources) give the
random-access sources these pipelines read.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable, Sequence

import grain
import jax
import numpy as np

from genesis_jax.data.normalize import dequantize_unit
from genesis_jax.data.patches import sample_patch
from genesis_jax.data.sources import cube_source, volume_source  # noqa: F401  (re-exported: the pipeline's sources)


def _shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    index = jax.process_index() if shard_index is None else int(shard_index)
    count = jax.process_count() if shard_count is None else int(shard_count)
    if not 0 <= index < count:
        raise ValueError(f"shard_index must be in [0, shard_count={count}), got {index}")
    return index, count


def _epochs(repeat: bool, num_epochs: int | None) -> int | None:
    if not repeat:
        return 1
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1 or None, got {num_epochs}")
    return num_epochs


def _to_float(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    return dequantize_unit(array) if array.dtype == np.uint16 else array.astype(np.float32, copy=False)


def _sharded_batches(ordered: grain.MapDataset, *, batch_size: int, shard_index: int | None,
                     shard_count: int | None, finite: bool, num_threads: int, prefetch: int,
                     worker_count: int) -> grain.IterDataset:
    index, count = _shard(shard_index, shard_count)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if finite:
        usable = len(ordered) - len(ordered) % (batch_size * count)
        if usable == 0:
            raise ValueError(f"{len(ordered)} examples do not fill one global batch of {batch_size} x {count}")
        ordered = ordered[:usable]
    local = ordered[index::count]
    ds = local.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))
    ds = ds.batch(batch_size, drop_remainder=True)
    if worker_count > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain's worker processes read absl flags; outside absl.app use defaults
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return ds


class _EpochOrder:
    """Global position -> source index: epoch e is np.random.default_rng([seed, e]).permutation(n).

    (A cached permutation per epoch: O(1) per lookup; grain's index_shuffle cost ~2 ms per element here.)
    ``repeats`` consecutive positions map to the same index (several patches per volume).
    """

    def __init__(self, n: int, seed: int, shuffle: bool, repeats: int = 1):
        self.n, self.seed, self.shuffle, self.repeats = n, seed, shuffle, repeats
        self.per_epoch = n * repeats
        self.permutation = functools.lru_cache(maxsize=4)(self._permutation)

    def __getstate__(self) -> dict:  # picklable for grain worker processes: the cache is rebuilt there
        return {k: v for k, v in self.__dict__.items() if k != "permutation"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.permutation = functools.lru_cache(maxsize=4)(self._permutation)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n) if self.shuffle else np.arange(self.n)

    def total(self, epochs: int | None) -> int:
        return self.per_epoch * epochs if epochs is not None else sys.maxsize

    def __call__(self, position: int) -> int:
        epoch, offset = divmod(position, self.per_epoch)
        return int(self.permutation(epoch)[offset // self.repeats])


def pretrain_dataset(source, *, batch_size: int, seed: int, shard_index: int | None = None,
                     shard_count: int | None = None, shuffle: bool = True, repeat: bool = True,
                     num_epochs: int | None = None, num_threads: int = 2, prefetch: int = 8,
                     worker_count: int = 0) -> grain.IterDataset:
    """Batches {'cube': float32 (batch_size, cx, cy, cz, 1)} of ``source`` cubes for this process.

    ``source``: random access to {'cube': uint16 or float array} (or bare arrays), e.g. ``cube_source(config)``.
    Shards default to (jax.process_index(), jax.process_count()); ``batch_size`` is the per-process batch.
    """
    if len(source) == 0:
        raise ValueError("pretrain_dataset: the source is empty")
    epochs = _epochs(repeat, num_epochs)
    order = _EpochOrder(len(source), seed, shuffle)

    def example(position: int) -> dict[str, np.ndarray]:
        element = source[order(position)]
        cube = element["cube"] if isinstance(element, dict) else element
        return {"cube": _to_float(cube)[..., None]}

    ordered = grain.MapDataset.range(order.total(epochs)).map(example)
    return _sharded_batches(ordered, batch_size=batch_size, shard_index=shard_index, shard_count=shard_count,
                            finite=epochs is not None, num_threads=num_threads, prefetch=prefetch,
                            worker_count=worker_count)


class _VolumeCache:
    """A few decoded volumes with their foreground coordinates (consecutive patches come from one volume)."""

    def __init__(self, source, size: int):
        self._source = source
        self.get = functools.lru_cache(maxsize=size)(self._load)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        element = self._source[index]
        image, label = _to_float(element["image"]), np.asarray(element["label"])
        return image, label, np.argwhere(label > 0)


def finetune_dataset(source, *, batch_size: int, seed: int, patch_shape: Sequence[int] | None = None,
                     foreground_fraction: float = 0.5, patches_per_volume: int = 4,
                     shard_index: int | None = None, shard_count: int | None = None, shuffle: bool = True,
                     repeat: bool = True, num_epochs: int | None = None, num_threads: int = 2, prefetch: int = 8,
                     cache_volumes: int = 4, transform: Callable[[dict, np.random.Generator], dict] | None = None
                     ) -> grain.IterDataset:
    """Fine-tuning batches for this process.

    Segmentation (``patch_shape`` given; source elements are whole volumes {'image', 'label'}): each epoch visits
    the volumes in a seeded order and draws ``patches_per_volume`` patches from each (centred on a foreground voxel
    with probability ``foreground_fraction``); yields {'image': float32 (b, *patch, 1), 'label': int32
    (b, *patch, 1)}.
    Fixed-size crops (``patch_shape=None``; e.g. LIDC crops, LUNA16 candidates): yields {'image': float32
    (b, X, Y, Z, 1), 'label': int32 (b, X, Y, Z, 1) for masks or (b,) for class labels}.
    ``transform(example, rng)``: optional host-side augmentation, with an rng keyed by the global position.
    """
    n = len(source)
    if n == 0:
        raise ValueError("finetune_dataset: the source is empty")
    epochs = _epochs(repeat, num_epochs)
    order = _EpochOrder(n, seed, shuffle, repeats=int(patches_per_volume) if patch_shape is not None else 1)
    cache = _VolumeCache(source, cache_volumes)

    def example(position: int) -> dict[str, np.ndarray]:
        volume = order(position)
        rng = np.random.default_rng([seed, 1, position])
        if patch_shape is not None:
            image, label, foreground = cache.get(volume)
            image, label = sample_patch(image, label, patch_shape, rng, foreground_fraction=foreground_fraction,
                                        foreground=foreground)
        else:
            element = source[volume]
            image, label = _to_float(element["image"]), np.asarray(element["label"])
        out = {"image": image[..., None], "label": label.astype(np.int32)[..., None] if label.ndim else
               np.int32(label)}
        return transform(out, rng) if transform is not None else out

    ordered = grain.MapDataset.range(order.total(epochs)).map(example)
    return _sharded_batches(ordered, batch_size=batch_size, shard_index=shard_index, shard_count=shard_count,
                            finite=epochs is not None, num_threads=num_threads, prefetch=prefetch, worker_count=0)


def global_batch(local_batch: dict[str, np.ndarray], sharding: jax.sharding.Sharding) -> dict[str, jax.Array]:
    """Assemble each process' local batch into global arrays (batch axis = process-major concatenation)."""
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)
