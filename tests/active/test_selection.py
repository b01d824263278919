"""Randomised top-omega*b selection, deterministic top-b and random selection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genesis_jax.active import pool_probabilities, select_candidates
from genesis_jax.active.selection import _gumbel_top_k
from tests.active import reference as ref


def test_pool_probabilities_match_the_published_formula():
    scores = np.random.default_rng(0).random(100).astype(np.float32)
    pool, probs = pool_probabilities(jnp.asarray(scores), b=4, omega=5)
    order, expected = ref.selection_probabilities(scores, 4, 5)
    np.testing.assert_array_equal(np.asarray(pool), order)
    np.testing.assert_allclose(np.asarray(probs), expected, rtol=1e-5, atol=1e-7)
    assert float(probs[-1]) == 0.0 and float(probs[0]) == pytest.approx(expected[0], rel=1e-5)


def test_selection_with_a_fixed_key_is_reproducible_distinct_and_available():
    scores = np.random.default_rng(1).random(200).astype(np.float32)
    available = np.ones(200, bool)
    available[np.argsort(-scores)[:7]] = False  # the best ones are already labelled
    picks = [select_candidates(jax.random.key(3), scores, 10, "randomized", 5, available) for _ in range(2)]
    np.testing.assert_array_equal(picks[0], picks[1])
    assert len(set(picks[0].tolist())) == 10 and available[picks[0]].all()
    # all picks come from the extended pool: the top omega*b available scores
    pool = np.argsort(-np.where(available, scores, -np.inf))[:50]
    assert set(picks[0].tolist()) <= set(pool.tolist())
    other = select_candidates(jax.random.key(4), scores, 10, "randomized", 5, available)
    assert set(other.tolist()) != set(picks[0].tolist())


def test_top_and_random_methods():
    scores = np.arange(30, dtype=np.float32)
    available = np.ones(30, bool)
    available[29] = False
    top = select_candidates(None, scores, 3, "top", available=available)
    np.testing.assert_array_equal(top, [28, 27, 26])
    rnd = select_candidates(jax.random.key(0), scores, 29, "random", available=available)
    assert sorted(rnd.tolist()) == list(range(29))


def test_draws_follow_the_sampling_probabilities():
    probs = jnp.asarray([0.5, 0.3, 0.2, 0.0])
    valid = jnp.ones(4, bool)
    keys = jax.random.split(jax.random.key(0), 4000)
    first = jax.vmap(lambda k: _gumbel_top_k(k, probs, valid, 1)[0])(keys)
    freq = np.bincount(np.asarray(first), minlength=4) / 4000
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.2, 0.0], atol=0.03)
    # without replacement: drawing all four returns each once, the zero-probability one last
    both = jax.vmap(lambda k: _gumbel_top_k(k, probs, valid, 4))(keys[:50])
    assert (np.sort(np.asarray(both), axis=1) == np.arange(4)).all() and (np.asarray(both)[:, -1] == 3).all()


def test_equal_scores_fall_back_to_uniform_and_small_pools_work():
    _, probs = pool_probabilities(jnp.ones(8), b=2, omega=5)
    np.testing.assert_allclose(np.asarray(probs), np.full(8, 1 / 8))
    picks = select_candidates(jax.random.key(0), np.ones(8), 2, omega=5)
    assert len(set(picks.tolist())) == 2


def test_bad_budgets_are_named():
    with pytest.raises(ValueError, match="budget b=5"):
        select_candidates(jax.random.key(0), np.ones(10), 5, available=np.arange(10) < 3)
    with pytest.raises(ValueError, match="selection method"):
        select_candidates(jax.random.key(0), np.ones(10), 2, "greedy")
    with pytest.raises(ValueError, match="needs a PRNG key"):
        select_candidates(None, np.ones(10), 2, "randomized")
