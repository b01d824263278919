"""Augmented patch sets of candidates, made and predicted on the device.

A candidate is a context array around a detection: (*spatial, C) with 2 or 3 spatial axes, the detection box
centred in it. Its patch set is m resamplings of the box (AIFT): every combination of a scale (the box enlarged by
f, e.g. the published 1.0/1.2/1.5), a translation (a fraction of the box), and an in-plane flip/rotation (the
dihedral group of the first two spatial axes: 1, 2, 4 or all 8 elements). Each patch is one affine map from the
patch grid into the context, sampled with linear interpolation (``map_coordinates``), so the whole set is one
vmapped, jitted computation with static shapes.

Predictions are vmapped over a candidate's patches and batched over candidates with ``lax.map(batch_size=...)``;
``PoolPredictor`` streams a pool of any size (100,000+) from the host in fixed-size chunks, so device memory is
bounded by the chunk and a pool of any length compiles once.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

# In-plane dihedral group, ordered so that every prefix of length 1, 2, 4, 8 is a group:
# identity, flip x, flip y, rotate 180, rotate 90, rotate 270, transpose, anti-transpose.
_DIHEDRAL = np.array(
    [
        [[1, 0], [0, 1]],
        [[-1, 0], [0, 1]],
        [[1, 0], [0, -1]],
        [[-1, 0], [0, -1]],
        [[0, -1], [1, 0]],
        [[0, 1], [-1, 0]],
        [[0, 1], [1, 0]],
        [[0, -1], [-1, 0]],
    ],
    np.float32,
)
TRANSLATION_MODES = ("none", "grid", "random")

PredictFn = Callable[[Any, jax.Array], jax.Array]  # (variables, patches (B, *patch, C)) -> probs (B, K)


@dataclasses.dataclass(frozen=True)
class PatchSet:
    """m affine maps from a patch grid into a candidate's context.

    matrices: (m, nd, nd) rotation/flip times scale, in units of the box; offsets: (m, nd) translations in units
    of the box; patch_shape: spatial shape of every patch; box_shape: the detection box in context voxels (what
    a scale-1 patch covers).
    """

    matrices: np.ndarray
    offsets: np.ndarray
    patch_shape: tuple[int, ...]
    box_shape: tuple[int, ...]

    @property
    def m(self) -> int:
        return int(self.matrices.shape[0])

    @property
    def ndim(self) -> int:
        return len(self.patch_shape)


def make_patch_set(
    patch_shape: Sequence[int],
    box_shape: Sequence[int] | None = None,
    scales: Sequence[float] = (1.0,),
    translation: float = 0.0,
    translation_mode: str = "none",
    flips_rotations: int = 1,
    seed: int = 0,
) -> PatchSet:
    """The product scales x translations x flips/rotations.

    translation_mode: 'none'; 'grid' (no shift and +-translation along each in-plane axis: 5 shifts);
    'random' (one uniform shift in [-translation, translation] per in-plane axis for every patch, fixed by
    ``seed``, as in the published 3 scales x 8 rotations = 24 polyp patches with 10% translations).
    flips_rotations: 1, 2, 4 or 8 elements of the in-plane dihedral group.
    """
    patch_shape = tuple(int(s) for s in patch_shape)
    nd = len(patch_shape)
    if nd not in (2, 3):
        raise ValueError(f"patch_shape must have 2 or 3 spatial axes, got {patch_shape}")
    box_shape = patch_shape if box_shape is None else tuple(int(s) for s in box_shape)
    if len(box_shape) != nd:
        raise ValueError(f"box_shape {box_shape} and patch_shape {patch_shape} differ in rank")
    if flips_rotations not in (1, 2, 4, 8):
        raise ValueError(f"flips_rotations must be 1, 2, 4 or 8, got {flips_rotations}")
    if translation_mode not in TRANSLATION_MODES:
        raise ValueError(f"translation_mode must be one of {TRANSLATION_MODES}, got {translation_mode!r}")
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive, got {tuple(scales)}")
    shifts = [np.zeros(nd, np.float32)]
    if translation_mode == "grid":
        for axis, sign in itertools.product(range(2), (1.0, -1.0)):
            shift = np.zeros(nd, np.float32)
            shift[axis] = sign * translation
            shifts.append(shift)
    rotations = []
    for d in _DIHEDRAL[:flips_rotations]:
        full = np.eye(nd, dtype=np.float32)
        full[:2, :2] = d
        rotations.append(full)
    combos = list(itertools.product(scales, shifts, rotations))
    matrices = np.stack([scale * rot for scale, _, rot in combos]).astype(np.float32)
    offsets = np.stack([shift for _, shift, _ in combos]).astype(np.float32)
    if translation_mode == "random":
        rng = np.random.default_rng(seed)
        offsets[:, :2] = rng.uniform(-translation, translation, size=(len(combos), 2))
    return PatchSet(matrices, offsets, patch_shape, box_shape)


def extract_patch(context: jax.Array, matrix: jax.Array, offset: jax.Array, patch_set: PatchSet) -> jax.Array:
    """One patch (*patch_shape, C) of a context (*spatial, C): linear interpolation, edges clamped."""
    spatial = context.shape[:-1]
    nd = patch_set.ndim
    if len(spatial) != nd:
        raise ValueError(f"context has spatial shape {spatial}, the patch set is {nd}D")
    patch = jnp.asarray(patch_set.patch_shape, jnp.float32)
    box = jnp.asarray(patch_set.box_shape, jnp.float32)
    centre = (jnp.asarray(spatial, jnp.float32) - 1.0) / 2.0
    grid = jnp.stack(jnp.meshgrid(*[jnp.arange(s, dtype=jnp.float32) for s in patch_set.patch_shape], indexing="ij"))
    # Patch voxel -> fraction of the box around its centre -> rotated, scaled, shifted -> context voxel.
    unit = (grid - ((patch - 1.0) / 2.0).reshape((nd,) + (1,) * nd)) / patch.reshape((nd,) + (1,) * nd)
    mapped = jnp.einsum("ij,j...->i...", matrix, unit) + offset.reshape((nd,) + (1,) * nd)
    coords = centre.reshape((nd,) + (1,) * nd) + mapped * box.reshape((nd,) + (1,) * nd)
    sample = lambda channel: jax.scipy.ndimage.map_coordinates(channel, list(coords), order=1, mode="nearest")
    return jax.vmap(sample, in_axes=-1, out_axes=-1)(context.astype(jnp.float32))


def candidate_patches(context: jax.Array, patch_set: PatchSet) -> jax.Array:
    """The m patches of one candidate: (m, *patch_shape, C)."""
    one = lambda matrix, offset: extract_patch(context, matrix, offset, patch_set)
    return jax.vmap(one)(jnp.asarray(patch_set.matrices), jnp.asarray(patch_set.offsets))


def patch_probabilities(
    predict_fn: PredictFn, variables: Any, contexts: jax.Array, patch_set: PatchSet, batch_size: int | None = None
) -> jax.Array:
    """(n, m, K) predictions of every patch of every candidate (jittable).

    vmapped over a candidate's patches, each patch predicted on its own (so the network must normalise at
    inference with fixed statistics, e.g. the 'keras' GenesisUNet variant); candidates go through ``lax.map`` in
    groups of ``batch_size``, which bounds the memory to batch_size * m patches.
    """

    def one_candidate(context: jax.Array) -> jax.Array:
        def one_patch(matrix: jax.Array, offset: jax.Array) -> jax.Array:
            return predict_fn(variables, extract_patch(context, matrix, offset, patch_set)[None])[0]

        return jax.vmap(one_patch)(jnp.asarray(patch_set.matrices), jnp.asarray(patch_set.offsets))

    return jax.lax.map(one_candidate, contexts, batch_size=batch_size)


class PoolPredictor:
    """Predicts the patch sets of a pool of any size in fixed-size host chunks (one compilation per chunk size).

    ``max_traces`` (tests) wraps the jitted chunk function in ``chex.assert_max_traces``.
    """

    def __init__(
        self,
        predict_fn: PredictFn,
        patch_set: PatchSet,
        chunk_size: int = 512,
        device_batch: int = 32,
        max_traces: int | None = None,
    ):
        self.patch_set = patch_set
        self.chunk_size = int(chunk_size)

        def predict_chunk(variables: Any, contexts: jax.Array) -> jax.Array:
            return patch_probabilities(predict_fn, variables, contexts, patch_set, batch_size=device_batch)

        if max_traces is not None:
            predict_chunk = chex.assert_max_traces(predict_chunk, n=max_traces)
        self._predict_chunk = jax.jit(predict_chunk)

    def __call__(self, variables: Any, contexts: Any, progress: bool = False, desc: str = "predict") -> np.ndarray:
        """contexts: an indexable (n, *spatial, C) host array (NumPy, memmap, ...). Returns (n, m, K) float32."""
        n = len(contexts)
        out = []
        chunks = range(0, n, self.chunk_size)
        for start in tqdm(chunks, desc=desc, unit="chunk", disable=not progress or len(chunks) < 2, leave=False):
            chunk = np.asarray(contexts[start : start + self.chunk_size], np.float32)
            valid = chunk.shape[0]
            if valid < self.chunk_size:  # pad the last chunk to the static shape
                chunk = np.concatenate([chunk, np.zeros((self.chunk_size - valid, *chunk.shape[1:]), np.float32)])
            out.append(np.asarray(self._predict_chunk(variables, chunk))[:valid])
        if not out:
            raise ValueError("cannot predict an empty pool")
        return np.concatenate(out)
