"""AIFT scores: the JAX implementation against the NumPy restatement and the published toy values (B9)."""

import jax.numpy as jnp
import numpy as np
import pytest

from genesis_jax.active import aift_scores, binary_probs, majority_count
from tests.active import reference as ref


def _dirichlet(n, m, k, seed, concentration=0.5):
    return np.random.default_rng(seed).dirichlet(np.full(k, concentration), size=(n, m)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(ref.PATTERNS))
def test_published_toy_table(name):
    probs = binary_probs(jnp.asarray([ref.PATTERNS[name]], jnp.float32))
    for (l1, l2, alpha), published in zip(ref.TABLE_COLUMNS, ref.TABLE_B9[name]):
        ours = float(aift_scores(probs, alpha, l1, l2, "matlab")[0])
        numpy_value = ref.binary_demo_score(ref.PATTERNS[name], l1, l2, alpha)
        decimals = 0 if published >= 100 else 2  # the table rounds the large values to integers
        assert round(ours, decimals) == pytest.approx(published, abs=1e-9), (name, l1, l2, alpha, ours)
        assert ours == pytest.approx(numpy_value, rel=1e-5, abs=1e-5)


def test_toy_rankings_as_published():
    probs = binary_probs(jnp.asarray([ref.PATTERNS[p] for p in "ABCDEFG"], jnp.float32))
    best = lambda **kw: "ABCDEFG"[int(jnp.argmax(aift_scores(probs, **kw)))]
    assert best(alpha=1.0, lambda1=0.0) == "C"  # diversity without majority prefers the noisy pattern
    assert best(alpha=0.25, lambda1=0.0) == "B"  # with majority selection it prefers the inconsistent one
    assert best(alpha=0.25, lambda2=0.0) == "A"  # entropy favours the uncertain one


@pytest.mark.parametrize("convention", ["matlab", "media"])
@pytest.mark.parametrize("alpha,lambdas", [(0.25, (1, 1)), (1.0, (1, 1)), (0.5, (1, 0)), (0.25, (0, 1))])
def test_random_predictions_match_numpy(convention, alpha, lambdas):
    probs = _dirichlet(24, 12, 3, seed=hash((convention, alpha, lambdas)) % 1000)
    ours = np.asarray(aift_scores(probs, alpha, *lambdas, convention))
    np.testing.assert_allclose(ours, ref.scores(probs, alpha, *lambdas, convention), rtol=2e-4, atol=1e-4)


def test_hand_made_multiclass_predictions():
    # two confident patches of class 2 and one noisy patch of class 0: alpha keeps the two agreeing ones
    probs = np.array([[[0.1, 0.1, 0.8], [0.05, 0.05, 0.9], [0.9, 0.05, 0.05], [0.2, 0.2, 0.6]]], np.float32)
    for convention in ("matlab", "media"):
        ours = float(aift_scores(probs, 0.5, 1, 1, convention)[0])
        assert ours == pytest.approx(float(ref.scores(probs, 0.5, 1, 1, convention)[0]), rel=1e-5)
    q = probs[0, [1, 0]].astype(np.float64)  # the 2 patches most confident for class 2
    e = -(q * np.log(q + ref.EPS)).sum(1)
    d = ((q[0] - q[1]) * (np.log(q[0] + ref.EPS) - np.log(q[1] + ref.EPS))).sum()
    assert float(aift_scores(probs, 0.5, 1, 1, "matlab")[0]) == pytest.approx(e.sum() + 2 * d, rel=1e-5)
    assert float(aift_scores(probs, 0.5, 1, 1, "media")[0]) == pytest.approx(e.mean() + d, rel=1e-5)


def test_conventions_differ_only_by_constant_factors():
    probs = _dirichlet(10, 8, 2, seed=3)
    k = majority_count(8, 0.25)
    ent = lambda c: np.asarray(aift_scores(probs, 0.25, 1, 0, c))
    div = lambda c: np.asarray(aift_scores(probs, 0.25, 0, 1, c))
    np.testing.assert_allclose(ent("media"), ent("matlab") / k, rtol=1e-5)
    np.testing.assert_allclose(div("media"), div("matlab") / 2, rtol=1e-5)


def test_vmapped_and_chunked_scoring_equal_a_per_candidate_loop():
    probs = _dirichlet(37, 11, 4, seed=5)
    batched = np.asarray(aift_scores(probs, chunk_size=None))
    chunked = np.asarray(aift_scores(probs, chunk_size=8))  # lax.map over 5 chunks, the last one padded
    loop = np.array([float(aift_scores(probs[i : i + 1])[0]) for i in range(len(probs))])
    np.testing.assert_allclose(batched, loop, rtol=1e-6)
    np.testing.assert_allclose(chunked, loop, rtol=1e-6)


def test_probabilities_of_exactly_zero_and_one_stay_finite():
    one_hot = np.eye(3, dtype=np.float32)[np.array([[0, 1, 2, 0], [2, 2, 2, 2]])]
    split = binary_probs(jnp.asarray([[0.0, 1.0, 0.0, 1.0], [1.0] * 4], jnp.float32))
    for probs in (one_hot, split):
        for convention in ("matlab", "media"):
            for alpha in (0.25, 1.0):
                s = aift_scores(probs, alpha, 1, 1, convention)
                assert bool(jnp.all(jnp.isfinite(s)))
    # all-certain candidates score 0 (up to eps); a split candidate is very diverse (log(1/eps) ~ 36 per pair)
    assert abs(float(aift_scores(split, 1.0, 1, 1)[1])) < 1e-10
    assert float(aift_scores(split, 1.0, 0, 1)[0]) == pytest.approx(8 * 2 * 36.04, rel=1e-3)


def test_large_pool_bounded_memory():
    probs = _dirichlet(100_000, 24, 2, seed=1, concentration=1.0)
    s = aift_scores(probs, chunk_size=8192)  # lax.map over 13 chunks of 8192 candidates
    assert s.shape == (100_000,) and bool(jnp.all(jnp.isfinite(s)))
    np.testing.assert_allclose(np.asarray(s[-50:]), ref.scores(probs[-50:], 0.25, 1, 1, "matlab"), rtol=2e-4, atol=1e-4)


def test_majority_count_rounds_like_matlab_and_bad_arguments_are_named():
    assert majority_count(11, 0.25) == 3  # the published 3 of 11
    assert majority_count(2, 0.25) == 1  # round(0.5) = 1, not Python's 0
    assert majority_count(24, 0.25) == 6 and majority_count(21, 0.25) == 5
    with pytest.raises(ValueError, match="alpha"):
        majority_count(11, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        majority_count(1, 0.25)
    with pytest.raises(ValueError, match="convention"):
        aift_scores(np.full((1, 4, 2), 0.5, np.float32), convention="cvpr")
    with pytest.raises(ValueError, match="n_candidates, m_patches, n_classes"):
        aift_scores(np.full((4, 2), 0.5, np.float32))
