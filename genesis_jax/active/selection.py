"""Which candidates to annotate next: randomised selection among the top omega*b scores (ACFT), the deterministic
top-b (CVPR'17 AIFT), and uniform random selection (the RFT baseline).

Randomised selection (MedIA'21): sort the scores of the available candidates in descending order, keep the top
omega*b (omega = 5), min-max normalise them inside that pool to [0, 1] (so the omega*b-th gets probability 0),
divide by their sum, and draw b candidates WITHOUT replacement with those probabilities. Drawing without replacement
uses the Gumbel-top-k trick (equivalent to drawing one at a time and renormalising). Already-labelled candidates are
excluded through an ``available`` mask, so the pool keeps one static shape across rounds and nothing recompiles.
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from genesis_jax.active.scores import OMEGA

Method = Literal["randomized", "top", "random"]
METHODS = ("randomized", "top", "random")

# Below any log-probability (>= log(float32 tiny) ~ -104) plus a Gumbel draw: ranks zero-probability members of
# the pool after every positive-probability one, and unavailable candidates after everything.
_ZERO_PROB_RANK = -1.0e4
_UNAVAILABLE_RANK = -1.0e9


def pool_probabilities(
    scores: jax.Array, b: int, omega: int = OMEGA, available: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """The extended pool and its sampling probabilities.

    Returns (pool_indices (P,), probabilities (P,)) with P = min(omega*b, n), pool sorted by descending score.
    Unavailable members of the pool (fewer than P available) get probability 0; when every available pool score
    is equal the available members are drawn uniformly.
    """
    n = scores.shape[0]
    size = min(omega * b, n)
    if available is None:
        available = jnp.ones((n,), bool)
    ranked = jnp.where(available, scores, -jnp.inf)
    top, pool = jax.lax.top_k(ranked, size)
    valid = jnp.isfinite(top)
    hi = jnp.max(jnp.where(valid, top, -jnp.inf))
    lo = jnp.min(jnp.where(valid, top, jnp.inf))
    spread = hi - lo
    normalised = jnp.where(valid, (top - lo) / jnp.where(spread > 0, spread, 1.0), 0.0)
    uniform = valid.astype(scores.dtype)
    weights = jnp.where(spread > 0, normalised, uniform)
    return pool, weights / jnp.maximum(jnp.sum(weights), jnp.finfo(scores.dtype).tiny)


def _gumbel_top_k(key: jax.Array, probs: jax.Array, valid: jax.Array, b: int) -> jax.Array:
    """b indices drawn without replacement with probabilities ``probs`` (Gumbel-top-k)."""
    gumbel = jax.random.gumbel(key, probs.shape, jnp.float32)
    rank = jnp.where(probs > 0, jnp.log(jnp.where(probs > 0, probs, 1.0)) + gumbel, _ZERO_PROB_RANK + gumbel)
    rank = jnp.where(valid, rank, _UNAVAILABLE_RANK)
    return jax.lax.top_k(rank, b)[1]


@functools.partial(jax.jit, static_argnames=("b", "omega", "method"))
def _select(key: jax.Array, scores: jax.Array, available: jax.Array, *, b: int, omega: int, method: Method):
    scores = scores.astype(jnp.float32)
    if method == "top":
        return jax.lax.top_k(jnp.where(available, scores, -jnp.inf), b)[1]
    if method == "random":
        uniform = available.astype(jnp.float32) / jnp.maximum(jnp.sum(available), 1)
        return _gumbel_top_k(key, uniform, available, b)
    pool, probs = pool_probabilities(scores, b, omega, available)
    picked = _gumbel_top_k(key, probs, available[pool], b)
    return pool[picked]


def select_candidates(
    key: jax.Array | None,
    scores: jax.Array | np.ndarray,
    b: int,
    method: Method = "randomized",
    omega: int = OMEGA,
    available: jax.Array | np.ndarray | None = None,
) -> np.ndarray:
    """Indices of the b candidates to annotate next (distinct, all available), as a NumPy int array.

    method: 'randomized' (among the top omega*b, min-max normalised probabilities; the ACFT default), 'top'
    (deterministic top-b; ``key`` is unused) or 'random' (uniform among the available candidates).
    """
    if method not in METHODS:
        raise ValueError(f"selection method must be one of {METHODS}, got {method!r}")
    scores = jnp.asarray(scores)
    if scores.ndim != 1:
        raise ValueError(f"scores must be one value per candidate, got shape {tuple(scores.shape)}")
    n = scores.shape[0]
    available = np.ones((n,), bool) if available is None else np.asarray(available, bool)
    if available.shape != (n,):
        raise ValueError(f"available mask has shape {available.shape}, expected ({n},)")
    n_available = int(available.sum())
    if not 1 <= b <= n_available:
        raise ValueError(f"budget b={b} must be between 1 and the {n_available} candidates still unlabelled")
    if omega < 1:
        raise ValueError(f"omega (random extension) must be >= 1, got {omega}")
    if key is None:
        if method != "top":
            raise ValueError(f"selection method {method!r} needs a PRNG key")
        key = jax.random.key(0)
    return np.asarray(_select(key, scores, jnp.asarray(available), b=b, omega=omega, method=method))
