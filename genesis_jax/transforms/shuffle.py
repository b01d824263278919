"""Local pixel shuffling (published: 10,000 random windows, each window's voxels shuffled in place).

Published algorithm (models_genesis.md §3.3): window ``w`` has size ``b ~ U_int[1, n//10]`` and origin
``p ~ U_int[0, n-b]`` per axis; its voxels are read from the ORIGINAL image, shuffled, and written to the output;
later windows overwrite earlier ones. Here that is done without a sequential loop and deterministically:

1. Ownership: each voxel belongs to the last (highest index) window covering it. XLA leaves the order of colliding
   scatter writes unspecified, so the owner is resolved with a scatter-MAX of window indices. To keep the scatter
   small (scatters are the slow primitive on CPU), windows are not scattered voxel by voxel: per axis a size ``b``
   is covered by k boxes of a level length ``L`` (``L <= b <= kL``; ``axis_plan``), so a window is the union of
   a few level boxes, scattered as points (12 per window at 64x64x32) into one map per level combination; the maps
   are then dilated by their level box (running max) and merged, axis by axis. Max is idempotent, so overlaps
   between the pieces of one window are harmless and the result is exact.
2. Shuffle: a voxel owned by window ``w`` at local (row-major) index ``l`` takes the original value at local index
   ``sigma_w(l)``, with ``sigma_w`` a keyed pseudo-random permutation of ``[0, n_w)`` evaluated only where it is
   needed (no per-window sort): a random affine map mod ``n_w`` followed by ``PERMUTATION_ROUNDS`` rounds of the
   swap-or-not shuffle (Hoang, Morris, Rogaway, CRYPTO 2012), a bijection for any domain size, whose swap bits are
   read from 128 random bits per window (``window_permutation``). Each window's values are a permutation of its
   original values, as published, and each voxel's source is exactly uniform over its window (so the fraction of
   voxels changed matches); ``np.random.shuffle`` draws the whole permutation exactly uniformly, this one
   approximately (total-variation distance to uniform ~0.01-0.03 on windows of 2-5 voxels, checked in the tests).

Sizes: the published constants need every axis >= 10; smaller axes use windows of size 1 on that axis (documented
clamp ``max(1, n // 10)``).
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_batching import custom_vmap

from genesis_jax.transforms import batching, sampling

NUM_WINDOWS = 10000  # published HEAD (the MedIA paper says 1,000; the 2019 script used 500)
PERMUTATION_ROUNDS = 8

# hash fields of the shuffle stream
_FIELD_SIZE, _FIELD_ORIGIN, _FIELD_KEY, _FIELD_AFFINE = 1, 2, 3, 4


def max_window_sizes(spatial_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Largest window size per axis: the published ``n // 10``, at least 1."""
    return tuple(max(1, n // 10) for n in spatial_shape)


def axis_plan(max_size: int) -> tuple[int, tuple[int, ...]]:
    """How an axis's window extents are scattered: (corners k, level lengths L_0 = 1, L_{j+1} = k L_j + 1, ...).

    A size b with L_j <= b <= k L_j is the union of k boxes of length L_j (their origins spaced at most L_j apart),
    so each window is ``prod(k)`` points in the map of its level combination. Axes whose sizes are at most 3 take
    k = max_size and a single level (fewer maps to dilate, a few more points); longer axes take k = 2.
    """
    corners = max_size if max_size <= 3 else 2
    levels = [1]
    while corners * levels[-1] + 1 <= max_size:
        levels.append(corners * levels[-1] + 1)
    return corners, tuple(levels)


def draw_windows(stream: jax.Array, spatial_shape: tuple[int, ...], num_windows: int) -> tuple[jax.Array, jax.Array]:
    """Window origins and sizes, both (num_windows, ndim) int32, with the published laws."""
    ndim = len(spatial_shape)
    counter = lax.iota(jnp.uint32, num_windows * ndim).reshape(num_windows, ndim)
    u_size = sampling.bits_to_unit(sampling.hash_bits(stream, counter, _FIELD_SIZE))
    u_origin = sampling.bits_to_unit(sampling.hash_bits(stream, counter, _FIELD_ORIGIN))
    dims = jnp.asarray(spatial_shape, jnp.int32)
    sizes = sampling.randint_from_unit(u_size, 1, jnp.asarray(max_window_sizes(spatial_shape), jnp.int32))
    origins = sampling.randint_from_unit(u_origin, 0, dims - sizes)
    # computed once: XLA would otherwise recompute the hashes inside each of the many consumers
    return batching.materialise(origins), batching.materialise(sizes)


def _window_max(x: jax.Array, axis: int, length: int) -> jax.Array:
    """out[i] = max(x[i - length + 1 .. i]) along ``axis`` (zero below the start): a reduce_window, which XLA
    materialises instead of fusing (and recomputing) into every consumer as it does with pad/slice chains."""
    window = [1] * x.ndim
    window[axis] = length
    padding = [(0, 0)] * x.ndim
    padding[axis] = (length - 1, 0)
    return lax.reduce_window(x, jnp.zeros((), x.dtype), lax.max, window, [1] * x.ndim, padding)


def _shift(x: jax.Array, axis: int, offset: int) -> jax.Array:
    """x shifted by ``offset`` towards higher indices along ``axis``, zero filled."""
    config = [(0, 0, 0)] * x.ndim
    config[axis] = (offset, -offset, 0)
    return lax.pad(x, jnp.zeros((), x.dtype), config)


def _spread(x: jax.Array, axis: int, lower: int, corners: int) -> jax.Array:
    """max over offsets {0, L, 2L, ..., (k-1)L, (k-1)L + 1} (L = ``lower``, k = ``corners``): the origins of the
    k + 1 level-L boxes that make one box of the next level, k L + 1."""
    if lower == 1:
        return _window_max(x, axis, corners + 1)
    spread = x
    for i in range(1, corners):
        spread = jnp.maximum(spread, _shift(x, axis, i * lower))
    return jnp.maximum(spread, _shift(x, axis, (corners - 1) * lower + 1))


def ownership_map(origins: jax.Array, sizes: jax.Array, spatial_shape: tuple[int, ...]) -> jax.Array:
    """Index of the last window covering each voxel (int32, -1 where none does), exactly as sequential writes."""
    ndim = len(spatial_shape)
    num_windows = origins.shape[0]
    volume = math.prod(spatial_shape)
    dtype = jnp.int16 if num_windows < 2**15 - 1 else jnp.int32
    plans = [axis_plan(m) for m in max_window_sizes(spatial_shape)]
    num_levels = [len(levels) for _, levels in plans]

    # Per axis: level j (largest L_j <= b) and the k corner origins o + floor(i (b - L_j) / (k - 1)).
    level_idx, corners = [], []
    for a, (k, levels) in enumerate(plans):
        lengths = jnp.asarray(levels, jnp.int32)
        j = jnp.sum(sizes[:, a : a + 1] >= lengths[None, :], axis=1) - 1
        slack = sizes[:, a] - lengths[j]
        level_idx.append(j)
        corners.append([origins[:, a] + (i * slack) // max(1, k - 1) for i in range(k)])

    level_flat = jnp.zeros((num_windows,), jnp.int32)
    for a in range(ndim):
        level_flat = level_flat * num_levels[a] + level_idx[a]
    points = []
    for combo in itertools.product(*[range(k) for k, _ in plans]):
        flat = jnp.zeros((num_windows,), jnp.int32)
        for a in range(ndim):
            flat = flat * spatial_shape[a] + corners[a][combo[a]]
        points.append(level_flat * volume + flat)
    index = jnp.concatenate(points)
    value = jnp.tile(jnp.arange(1, num_windows + 1, dtype=dtype), len(points))
    maps = jnp.zeros((math.prod(num_levels) * volume,), dtype)
    maps = maps.at[index].max(value, mode="promise_in_bounds")
    maps = maps.reshape(*num_levels, *spatial_shape)

    # Dilate axis by axis, from the top level down to level 0, then by the level-0 box (length 1: nothing to do).
    for a, (k, levels) in enumerate(plans):
        spatial_axis = maps.ndim - ndim + a - 1  # after taking the leading level axis away
        merged = maps[-1]
        for j in range(num_levels[a] - 1, 0, -1):
            merged = jnp.maximum(maps[j - 1], _spread(merged, spatial_axis, levels[j - 1], k))
        maps = merged
    return maps.astype(jnp.int32) - 1


def _primes_above(bound: int, count: int = 64) -> tuple[int, ...]:
    """The ``count`` smallest primes greater than ``bound`` (each is coprime to every window volume <= bound)."""
    primes, candidate = [], bound + 1
    while len(primes) < count:
        if candidate > 1 and all(candidate % d for d in range(2, math.isqrt(candidate) + 1)):
            primes.append(candidate)
        candidate += 1
    return tuple(primes)


def _mod(value: jax.Array, size: jax.Array) -> jax.Array:
    """value mod size for 0 <= value < 2^31 (float quotient, then an exact integer correction)."""
    quotient = jnp.floor(value.astype(jnp.float32) / size.astype(jnp.float32)).astype(jnp.int32)
    r = value - quotient * size
    r = jnp.where(r < 0, r + size, r)
    return jnp.where(r >= size, r - size, r)


def _mul_mod(a: jax.Array, b: jax.Array, size: jax.Array, bits: int) -> jax.Array:
    """(a * b) mod size for 0 <= a, b < size < 2^30 and b < 2^bits, without the 32-bit overflow of ``a * b``:
    double-and-add over the bits of b, every partial result kept below size."""
    result = jnp.zeros_like(a)
    for bit in reversed(range(bits)):
        result = result + result
        result = jnp.where(result >= size, result - size, result)
        result = jnp.where((b >> bit) & 1 == 1, result + a, result)
        result = jnp.where(result >= size, result - size, result)
    return result


def draw_affine(stream: jax.Array, window_volume: jax.Array, max_volume: int) -> tuple[jax.Array, jax.Array]:
    """Per window: a multiplier that is a unit mod the window volume (a prime > ``max_volume``, reduced) and a
    uniform offset in [0, volume), for the affine step of ``window_permutation``."""
    primes = jnp.asarray(_primes_above(max_volume), jnp.int32)
    counter = lax.iota(jnp.uint32, window_volume.shape[0])
    choice = (sampling.hash_bits(stream, counter, _FIELD_AFFINE) & jnp.uint32(primes.shape[0] - 1)).astype(jnp.int32)
    multiplier = _mod(primes[choice], window_volume)
    u = sampling.bits_to_unit(sampling.hash_bits(stream, counter, _FIELD_AFFINE + 1))
    return multiplier, sampling.randint_from_unit(u, 0, window_volume - 1)


# Odd multipliers (golden ratio, murmur3, xxhash) and offsets that make the round keys of one window key differ.
_ROUND_MULTIPLIERS = (0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F, 0x165667B1, 0xD3A2646D, 0xFD7046C5, 0xB55A4F09)
_ROUND_OFFSET = 0x632BE5AB
# Random bits per window for the rounds' swap decisions: a power of two, >= the largest window volume at 64x64x32
# (6 x 6 x 3 = 108); larger windows (a 64^3 cube has up to 6 x 6 x 6 = 216) reuse bits within a round, still a
# bijection.
_SWAP_BITS = 128


def window_permutation(
    index: jax.Array,
    size: jax.Array,
    multiplier: jax.Array,
    offset: jax.Array,
    key: jax.Array,
    rounds: int = PERMUTATION_ROUNDS,
    max_size: int = 1 << 16,
) -> jax.Array:
    """A keyed pseudo-random permutation of ``[0, size)`` applied to ``index`` (all arguments broadcast).

    ``max_size``: a static bound on ``size``. It picks the forms of two steps: windows of up to 46,340 voxels take
    the affine product in one int32 multiply, larger ones a double-and-add that cannot overflow; windows of up to
    2^16 voxels take K from an integer product, larger ones from a float one.

    First the affine map x -> (multiplier x + offset) mod size (multiplier a unit mod size, offset uniform), which
    alone makes every voxel's source exactly uniform over its window, then ``rounds`` swap-or-not rounds keyed by
    ``key`` (uint32), which break the affine structure: each pairs x with K - x (mod size) for a round constant K and
    swaps the pair when a keyed bit of the pair's larger member is set, a bijection of [0, size) for any size.

    The rounds are cheap integer code: the window key is expanded once into 128 random bits (three hashes), and
    round r reads the bit at (larger member + a per-round rotation) mod 128, with its pairing constant K and rotation
    from a multiply of the key. For windows of up to 128 voxels the bits one round reads are distinct, so its swap
    decisions are independent. Against two hashes and float conversions per round this is ~3x less CPU per voxel
    on XLA:CPU, with the same distance to uniform (tests).
    """
    if not 0 <= rounds <= len(_ROUND_MULTIPLIERS):
        raise ValueError(f"window_permutation: rounds must be in [0, {len(_ROUND_MULTIPLIERS)}], got {rounds}")
    u32 = jnp.uint32
    if (max_size - 1) * max_size < 2**31:  # multiplier, index < max_size: the product fits in int32
        x = _mod(multiplier * index + offset, size)
    else:  # windows over 46,340 voxels (cubes of several hundred voxels per axis)
        x = _mul_mod(jnp.asarray(multiplier), jnp.asarray(index), size, max(1, (max_size - 1).bit_length())) + offset
        x = jnp.where(x >= size, x - size, x)
    x = x.astype(u32)
    n = jnp.asarray(size).astype(u32)
    key = jnp.asarray(key).astype(u32)
    words = [key] + [sampling.mix32(key + u32((j + 1) * 0x9E3779B9 & 0xFFFFFFFF)) for j in range(3)]
    for r in range(rounds):
        round_key = key * u32(_ROUND_MULTIPLIERS[r]) + u32((r + 1) * _ROUND_OFFSET & 0xFFFFFFFF)
        if max_size <= 1 << 16:
            k = ((round_key >> 16) * n) >> 16  # uniform on [0, n) up to n / 2^16, integer only
        else:  # huge windows (cubes of several hundred voxels per axis): 16 x 16 bits would overflow
            k = sampling.randint_from_unit(sampling.bits_to_unit(round_key), 0, n - 1).astype(u32)
        partner = k - x
        partner = jnp.where(k < x, partner + n, partner)
        position = (jnp.maximum(x, partner) + (round_key >> 9)) & u32(_SWAP_BITS - 1)
        upper = (position >> 5) & u32(1)
        word = jnp.where(
            position >= 64, jnp.where(upper == 1, words[3], words[2]), jnp.where(upper == 1, words[1], words[0])
        )
        swap = (word >> (position & u32(31))) & u32(1)
        x = jnp.where(swap == 1, partner, x)
    return x.astype(jnp.int32)


def _gather_packed(fields: list[tuple[jax.Array, int]], index: jax.Array) -> list[jax.Array]:
    """``[values[index] for values, bits in fields]`` for small non-negative int32 per-window fields of ``bits``
    bits each, packed into as few int32 words as fit: on XLA:CPU gathering one int32 column costs a fraction of a
    gather of whole rows, and a fraction of one gather per field."""
    words, current, used = [], [], 0
    for number, (_, bits) in enumerate(fields):
        if used + bits > 31:
            words.append(current)
            current, used = [], 0
        current.append((number, used, bits))
        used += bits
    words.append(current)
    out: list[jax.Array] = [None] * len(fields)
    for layout in words:
        word = jnp.zeros(fields[0][0].shape, jnp.int32)
        for number, shift, _ in layout:
            word = word | (fields[number][0] << shift)
        gathered = batching.take(word, index)
        for number, shift, bits in layout:
            out[number] = (gathered >> shift) & ((1 << bits) - 1)
    return out


def _bits(max_value: int) -> int:
    return max(1, int(max_value).bit_length())


def shuffle_sources(
    stream: jax.Array, spatial_shape: tuple[int, ...], num_windows: int, rounds: int = PERMUTATION_ROUNDS
) -> jax.Array:
    """Flat (row-major) index of the voxel each output voxel reads from; (*spatial_shape,) int32."""
    ndim = len(spatial_shape)
    volume = math.prod(spatial_shape)
    own = lax.iota(jnp.int32, volume).reshape(spatial_shape)
    if num_windows == 0:
        return own
    max_sizes = max_window_sizes(spatial_shape)
    max_volume = math.prod(max_sizes)
    origins, sizes = draw_windows(stream, spatial_shape, num_windows)
    multipliers, offsets = draw_affine(stream, jnp.prod(sizes, axis=1), max_volume)
    owner = ownership_map(origins, sizes, spatial_shape)
    owner_or_0 = jnp.maximum(owner, 0)

    fields = [(origins[:, a], _bits(n - 1)) for a, n in enumerate(spatial_shape)]
    fields += [(sizes[:, a] - 1, _bits(m - 1)) for a, m in enumerate(max_sizes)]
    fields += [(multipliers, _bits(max_volume - 1)), (offsets, _bits(max_volume - 1))]
    gathered = _gather_packed(fields, owner_or_0)
    origin, size = gathered[:ndim], [s + 1 for s in gathered[ndim : 2 * ndim]]
    multiplier, offset = gathered[2 * ndim :]

    coords = [lax.broadcasted_iota(jnp.int32, spatial_shape, a) for a in range(ndim)]
    local = jnp.zeros(spatial_shape, jnp.int32)
    window_volume = jnp.ones(spatial_shape, jnp.int32)
    for a in range(ndim):
        local = local * size[a] + (coords[a] - origin[a])
        window_volume = window_volume * size[a]
    window_key = sampling.hash_bits(stream, owner_or_0.astype(jnp.uint32), _FIELD_KEY)
    permuted = window_permutation(local, window_volume, multiplier, offset, window_key, rounds, max_volume)

    # Back to coordinates inside the window (float division is exact for these small integers), then a flat index.
    source = jnp.zeros(spatial_shape, jnp.int32)
    remainder = permuted.astype(jnp.float32)
    for a in range(ndim):
        stride = math.prod(size[a + 1 :], start=jnp.ones(spatial_shape, jnp.int32)).astype(jnp.float32)
        step = jnp.floor((remainder + 0.5) / stride)
        remainder = remainder - step * stride
        source = source * spatial_shape[a] + origin[a] + step.astype(jnp.int32)
    return jnp.where(owner >= 0, source, own)


@custom_vmap
def _move_voxels(flat_image: jax.Array, source: jax.Array) -> jax.Array:
    """``flat_image[source]`` (rows of a (voxels, channels) image), ``source`` materialised first: fused into the
    gather, its hash-heavy computation is not vectorised by XLA:CPU (~1.4x slower than a loop of its own)."""
    return flat_image[batching.materialise(source)]


@_move_voxels.def_vmap
def _move_voxels_vmap(axis_size: int, in_batched: list[bool], flat_image: jax.Array, source: jax.Array):
    # vmapped, the materialising scatter and the gather both get batch dimensions, which on XLA:CPU costs more
    # (~1.2x) than the fused gather it avoids: gather directly
    image_axis, source_axis = (0 if batched else None for batched in in_batched)
    gather = jax.vmap(lambda image, index: image[index], in_axes=(image_axis, source_axis))
    return gather(flat_image, source), True


def shuffle_image(stream: jax.Array, image: jax.Array, num_windows: int) -> jax.Array:
    """``image`` (spatial axes first, one trailing channel axis) with its voxels moved as ``shuffle_sources`` says."""
    source = shuffle_sources(stream, image.shape[:-1], num_windows)
    return _move_voxels(image.reshape(-1, image.shape[-1]), source.reshape(-1)).reshape(image.shape)


@functools.partial(jax.jit, static_argnames=("num_windows",))
def local_pixel_shuffle(key: jax.Array, image: jax.Array, num_windows: int = NUM_WINDOWS) -> jax.Array:
    """Shuffle ``num_windows`` random windows of ``image`` (spatial axes first, one trailing channel axis).

    All channels move together. Always applied: the rate is the caller's decision.
    """
    return shuffle_image(sampling.stream_from_key(key), image, num_windows)
