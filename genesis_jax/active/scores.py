"""AIFT candidate scores: entropy and pairwise symmetric-KL diversity over a candidate's augmented patches.

A candidate's m patches should agree. Per candidate, with P of shape (m, K) (softmax over K classes):

- majority selection: the dominant class y = argmax_k mean_j P[j, k] (exact ties: the higher class); keep the round(alpha*m) patches most
  confident for y (the published alpha = 1/4), so a few noisy augmentations cannot make a candidate look diverse;
- entropy e_j = -sum_k P[j,k] log(P[j,k] + eps);
- diversity d(j,l) = sum_k (P[j,k] - P[l,k]) (log(P[j,k] + eps) - log(P[l,k] + eps))  (= KL(j||l) + KL(l||j));
- convention 'matlab' (CVPR'17, the official demo): a = lambda1 * sum_j e_j + lambda2 * sum_{j != l} d(j,l)
  (every unordered pair counted twice); convention 'media' (MedIA'21): a = lambda1 * mean_j e_j
  + lambda2 * sum_{j < l} d(j,l) (every pair once).

eps is Matlab's ``eps`` (2.2e-16), as in the official demo, so probabilities of exactly 0 or 1 stay finite.
``lambda1``/``lambda2`` are the published on/off switches (entropy only: (1, 0); diversity only: (0, 1)).
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

Convention = Literal["matlab", "media"]
CONVENTIONS = ("matlab", "media")

# Matlab's `eps` (the spacing of doubles at 1.0), used by the official active_select_demo.m.
MATLAB_EPS = float(np.finfo(np.float64).eps)
ALPHA = 0.25  # majority ratio, all published applications
OMEGA = 5  # random extension of the selection pool, all published applications
TIE_TOLERANCE = 1e-6  # mean predictions closer than this are a tie (float32 rounding of an exact tie)


def majority_count(m_patches: int, alpha: float) -> int:
    """round(alpha * m) patches, rounding halves up as Matlab's ``round`` does (Python's rounds to even)."""
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha (majority ratio) must be in (0, 1], got {alpha}")
    k = int(np.floor(alpha * m_patches + 0.5))
    if k < 1:
        raise ValueError(
            f"alpha={alpha} keeps round(alpha*m) = 0 of m={m_patches} patches; use a larger alpha or more patches"
        )
    return k


def dominant_class(probs: jax.Array, tie_tolerance: float = TIE_TOLERANCE) -> jax.Array:
    """argmax_k of the mean prediction of one candidate's (m, K) patches; classes whose means are within
    ``tie_tolerance`` of the best are tied and the highest class index wins.

    Why: pattern B of CVPR'17 Table 1 has a mean of exactly 0.5, and the published values (Ent^1/4 = 0.50,
    Div^1/4 = 27.73) are those of its patches sorted for the positive class.
    """
    means = jnp.mean(probs, axis=0)
    tied = means >= jnp.max(means) - tie_tolerance
    return probs.shape[-1] - 1 - jnp.argmax(tied[::-1])


def majority_patches(probs: jax.Array, k: int) -> jax.Array:
    """The k patches of one candidate (probs: (m, K)) most confident for the dominant class of the mean
    prediction, in descending order of that confidence; equal confidences keep the lower patch index first."""
    dominant = dominant_class(probs)
    _, order = jax.lax.top_k(probs[:, dominant], k)
    return probs[order]


def _candidate_score(
    probs: jax.Array, lambdas: jax.Array, *, k: int, convention: Convention, eps: float
) -> jax.Array:
    q = majority_patches(probs, k) if k < probs.shape[0] else probs
    log_q = jnp.log(q + eps)
    entropy = -jnp.sum(q * log_q, axis=-1)  # (k,)
    # Pairwise symmetric KL by broadcasting: (k, k); the diagonal is exactly 0.
    diversity = jnp.sum((q[:, None, :] - q[None, :, :]) * (log_q[:, None, :] - log_q[None, :, :]), axis=-1)
    if convention == "matlab":
        e, d = jnp.sum(entropy), jnp.sum(diversity)
    else:
        e, d = jnp.mean(entropy), 0.5 * jnp.sum(diversity)
    return lambdas[0] * e + lambdas[1] * d


@functools.partial(jax.jit, static_argnames=("k", "convention", "eps", "chunk_size"))
def _scores(
    probs: jax.Array, lambdas: jax.Array, *, k: int, convention: Convention, eps: float, chunk_size: int | None
) -> jax.Array:
    score = functools.partial(_candidate_score, lambdas=lambdas, k=k, convention=convention, eps=eps)
    if chunk_size is None or chunk_size >= probs.shape[0]:
        return jax.vmap(score)(probs)
    # lax.map with batch_size: vmapped chunks inside a scan, so memory is bounded by chunk_size * k^2 * K.
    return jax.lax.map(score, probs, batch_size=chunk_size)


def aift_scores(
    probs: jax.Array,
    alpha: float = ALPHA,
    lambda1: float = 1.0,
    lambda2: float = 1.0,
    convention: Convention = "matlab",
    *,
    eps: float = MATLAB_EPS,
    chunk_size: int | None = 8192,
) -> jax.Array:
    """One AIFT score per candidate (higher = more worth annotating).

    Args:
      probs: (n_candidates, m_patches, n_classes) softmax probabilities of every augmented patch of every candidate.
      alpha: majority ratio; round(alpha*m) patches are scored (1.0 scores them all: no majority selection).
      lambda1, lambda2: the entropy and diversity switches.
      convention: 'matlab' (CVPR'17 demo: summed entropy, pairs counted twice) or 'media' (MedIA'21: mean entropy,
        pairs counted once).
      eps: added inside every log (Matlab's eps by default).
      chunk_size: candidates scored at once (bounded memory for pools of 100,000+); None scores all at once.
    Returns:
      (n_candidates,) float scores.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if probs.ndim != 3:
        raise ValueError(f"probs must have shape (n_candidates, m_patches, n_classes), got {tuple(probs.shape)}")
    probs = jnp.asarray(probs)
    if not jnp.issubdtype(probs.dtype, jnp.floating):
        probs = probs.astype(jnp.float32)
    k = majority_count(probs.shape[1], alpha)
    lambdas = jnp.asarray([lambda1, lambda2], probs.dtype)
    return _scores(probs, lambdas, k=k, convention=convention, eps=float(eps), chunk_size=chunk_size)


def binary_probs(p: jax.Array | np.ndarray) -> jax.Array:
    """(..., m) probabilities of the positive class -> (..., m, 2) two-class probabilities [1 - p, p]."""
    p = jnp.asarray(p)
    return jnp.stack([1.0 - p, p], axis=-1)
