"""Interim input pipeline for pre-training, used until genesis_jax.data.pipeline lands in main: a grain
MapDataset over in-memory cubes (real grain, so the iterator state is checkpointed exactly), sharded by process.

Sources: 'npy' (the published ``bat_*_64x64x32_*.npy`` cube files, (N, X, Y, Z) or (N, X, Y, Z, 1) in [0, 1]) or
'synthetic' (smooth random cubes in [0, 1], only for smoke runs).
"""

from __future__ import annotations

import glob
from typing import Any, Mapping, Sequence

import grain
import numpy as np
from scipy import ndimage


def _load_npy(patterns: Sequence[str], field: str) -> np.ndarray:
    """(N, X, Y, Z) float32 cubes from the matching files."""
    files = sorted({f for p in patterns for f in glob.glob(str(p))})
    if not files:
        raise FileNotFoundError(f"config.data.{field}: no file matches {list(patterns)}")
    arrays = []
    for f in files:
        a = np.load(f, mmap_mode="r")
        if a.ndim == 5 and a.shape[-1] == 1:
            a = a[..., 0]
        if a.ndim != 4:
            raise ValueError(f"{f}: expected cubes (N, X, Y, Z) or (N, X, Y, Z, 1), got shape {a.shape}")
        arrays.append(np.asarray(a, np.float32))
    return np.concatenate(arrays)


def _synthetic(n: int, shape: Sequence[int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    spatial = tuple(shape[:-1])
    cubes = ndimage.gaussian_filter(rng.random((n, *spatial), dtype=np.float32), sigma=(0,) + (1.5,) * len(spatial))
    lo = cubes.min(axis=tuple(range(1, cubes.ndim)), keepdims=True)
    hi = cubes.max(axis=tuple(range(1, cubes.ndim)), keepdims=True)
    return ((cubes - lo) / np.maximum(hi - lo, 1e-6)).astype(np.float32)


def cube_sources(data: Mapping[str, Any], input_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) cube arrays (N, X, Y, Z) for ``config.data``; ``input_shape`` is (X, Y, Z, 1)."""
    kind = data.get("source", "synthetic")
    if kind == "npy":
        return _load_npy(data["train_files"], "train_files"), _load_npy(data["val_files"], "val_files")
    if kind == "synthetic":
        seed = int(data.get("seed", 0))
        return (_synthetic(int(data["num_train"]), input_shape, seed),
                _synthetic(int(data["num_val"]), input_shape, seed + 1))
    raise ValueError(f"config.data.source must be 'npy' or 'synthetic', got {kind!r}")


def pretrain_dataset(
    source: Any, *, batch_size: int, seed: int, shard_index: int = 0, shard_count: int = 1,
    shuffle: bool = True, repeat: bool = True,
) -> grain.IterDataset:
    """{'cube': (batch_size, X, Y, Z, 1) float32} batches of this process's shard of ``source`` (a random-access
    sequence of (X, Y, Z) cubes or of {'cube': (X, Y, Z)} dicts)."""
    ds = grain.MapDataset.source(source)
    if shuffle:
        ds = ds.shuffle(seed=seed)
    if repeat:
        ds = ds.repeat(None)
    ds = ds[shard_index::shard_count]
    ds = ds.map(lambda e: {"cube": np.asarray(e["cube"] if isinstance(e, dict) else e, np.float32)[..., None]})
    return ds.batch(batch_size, drop_remainder=True).to_iter_dataset(
        grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)
    )
