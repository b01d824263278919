"""Random numbers for the deformations: a counter-based hash keyed by the bits of a JAX PRNG key.

Every draw (decisions, sizes, positions, window permutations, noise) is a hash of a 64-bit stream seed and the
element's index: the ``lowbias32`` integer mixer (C. Wellons' hash-prospector), applied twice, the same idea as
Philox/Threefry (a keyed bijection of a counter). A stream seed is derived from the raw bits of the caller's
``jax.random`` key (``jax.random.key_data``) and a tag per use. Why not ``jax.random.uniform`` itself:

- speed: for a batch of 32 cubes of 64x64x32, ``jax.random.uniform`` takes ~60-70 ms on XLA:CPU, the hash ~5 ms
  (10,000 shuffle windows and one noise value per voxel per sample); on GPU both are cheap;
- vmap invariance: with the ``rbg``/``unsafe_rbg`` PRNG implementations, ``jax.random`` draws inside ``vmap``
  differ from the same draws made per sample; a hash of the key bits does not, so the batched transform equals
  the per-sample one under every PRNG implementation.

The same key gives the same numbers on every backend. Integers uniform on ``[lo, hi]`` (inclusive, like Python's
``random.randint``) are ``lo + floor(u * (hi - lo + 1))`` with ``u`` a 24-bit uniform (bias below 1e-5 here).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

_GOLDEN = 0x9E3779B9  # odd constant that spreads consecutive tags and fields over the 32-bit space
_SALT = 0x632BE5AB


def mix32(x: jax.Array) -> jax.Array:
    """lowbias32: a bijective uint32 -> uint32 mixer with low bias (every input bit affects every output bit)."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _constant(value: int) -> jax.Array:
    return jnp.uint32(value & 0xFFFFFFFF)


def stream_from_key(key: jax.Array) -> jax.Array:
    """A stream seed, uint32 (2,), from a typed ``jax.random`` key or a raw uint32 key of any PRNG impl."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        words = jax.random.key_data(key)
    else:
        words = key
    words = jnp.ravel(words).astype(jnp.uint32)
    state = jnp.stack([_constant(_SALT), _constant(~_SALT)])
    for i in range(words.shape[0]):
        state = mix32(state ^ (words[i] + _constant(i * _GOLDEN))) + jnp.stack([state[1], state[0]])
    return mix32(state)


def substream(stream: jax.Array, tag: int) -> jax.Array:
    """An independent stream seed for use ``tag`` (a small int) of ``stream``."""
    first = mix32(stream[0] + _constant((tag + 1) * _GOLDEN))
    return jnp.stack([first, mix32(stream[1] ^ first)])


def hash_bits(stream: jax.Array, counter: jax.Array, field: int = 0) -> jax.Array:
    """uint32 pseudo-random bits for each ``counter`` (integer array) of ``stream``; ``field`` separates uses."""
    inner = mix32(stream[0] + _constant(field * _GOLDEN + _SALT))
    return mix32(mix32(counter.astype(jnp.uint32) ^ inner) + stream[1])


def bits_to_unit(bits: jax.Array) -> jax.Array:
    """uint32 bits -> float32 uniform on [0, 1) with 24-bit resolution (never 1.0)."""
    return (bits >> 8).astype(jnp.float32) * jnp.float32(1.0 / (1 << 24))


def uniform(stream: jax.Array, shape: tuple[int, ...], field: int = 0) -> jax.Array:
    """float32 U[0, 1) of ``shape`` for ``stream``."""
    size = 1
    for s in shape:
        size *= s
    counter = lax.iota(jnp.uint32, size).reshape(shape)
    return bits_to_unit(hash_bits(stream, counter, field))


def randint_from_unit(u: jax.Array, lo, hi) -> jax.Array:
    """Integers uniform on [lo, hi] (inclusive, broadcasting) from uniforms ``u`` in [0, 1); int32."""
    lo = jnp.asarray(lo, jnp.int32)
    hi = jnp.asarray(hi, jnp.int32)
    span = (hi - lo + 1).astype(jnp.float32)
    return jnp.minimum(lo + jnp.floor(u * span).astype(jnp.int32), hi)


def leading_successes(u: jax.Array, rate) -> jax.Array:
    """Length of the leading run of ``u[i] < rate`` along the last axis: a capped ``while random() < rate`` loop."""
    success = (u < rate).astype(jnp.int32)
    return jnp.sum(jnp.cumprod(success, axis=-1), axis=-1)
