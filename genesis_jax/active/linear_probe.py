"""A stable active-learning learner: a linear softmax head on cached encoder features, trained to convergence.

Why: fine-tuning a network for a few dozen Adam steps per round (``learner.ContinualLearner``) ends some rounds at
chance loss with constant predictions, and that learner noise swamps any selection effect (science audit D5). Here
the encoder (M_0, e.g. a Models Genesis encoder) is frozen: every patch of every candidate is encoded once
(``encode_patch_sets``: global average pool of the bottleneck, vmapped over a candidate's patches, chunked on the
device), and each round fits an L2-regularised softmax regression on the labelled candidates' patch features by
damped Newton steps (``LinearProbe``: full batch, jitted, deterministic; the same labels always give the same
head). With L2 the problem is strictly convex, so a fixed number of Newton iterations reaches the optimum.

The guard (``check_fit``): a round whose training loss ends near chance, the loss of the best constant predictor
(the entropy of its labels' class frequencies, ln 2 when balanced), or whose predictions are constant learned
nothing; it raises ``TrainingFailure`` instead of becoming a data point.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from genesis_jax.active.learner import pad_to_bucket
from genesis_jax.active.patches import PatchSet, PoolPredictor


class TrainingFailure(RuntimeError):
    """A round's learner ended at chance loss or with constant predictions (no information to act on)."""


@dataclasses.dataclass(frozen=True)
class ProbeFit:
    """A fitted head: ``weights`` (D + 1, K - 1), the last row the bias, the last class the reference (logit 0); the final unregularised training loss, the
    chance loss of its labels, and the spread (max - min) of its predicted probabilities on the training set."""

    weights: np.ndarray
    loss: float
    chance_loss: float
    prediction_spread: float


def gap_feature_fn(model: Any) -> Callable[[Any, jax.Array], jax.Array]:
    """(variables, patches (B, *spatial, C)) -> (B, D): the global average pool of a GenesisUNet's bottleneck
    (inference mode: BatchNorm uses its stored statistics, so each patch is encoded on its own)."""

    def features(variables: Any, patches: jax.Array) -> jax.Array:
        bottleneck = model.apply(variables, patches, train=False, output="bottleneck")
        return jnp.mean(bottleneck.astype(jnp.float32), axis=tuple(range(1, bottleneck.ndim - 1)))

    return features


def encode_patch_sets(
    feature_fn: Callable[[Any, jax.Array], jax.Array],
    variables: Any,
    contexts: np.ndarray,
    patch_set: PatchSet,
    chunk_size: int = 256,
    device_batch: int = 16,
) -> np.ndarray:
    """(n, m, D) features of the m patches of every candidate: one jitted, vmapped pass per host chunk."""
    return PoolPredictor(feature_fn, patch_set, chunk_size, device_batch)(variables, contexts)


def chance_loss(labels: np.ndarray, n_classes: int) -> float:
    """The cross-entropy of the best constant predictor: the entropy of the label frequencies."""
    freq = np.bincount(np.asarray(labels, np.int64), minlength=n_classes) / max(len(labels), 1)
    return float(-sum(p * math.log(p) for p in freq if p > 0))


def check_fit(fit: ProbeFit, margin: float = 0.05, min_spread: float = 1e-3) -> None:
    """Raise ``TrainingFailure`` when the labels hold one class (chance loss 0: nothing to separate), the fit
    ended within ``margin`` (a fraction) of its chance loss, or its predictions vary by less than ``min_spread``."""
    one_class = fit.chance_loss <= 0
    if one_class or fit.loss >= (1.0 - margin) * fit.chance_loss or fit.prediction_spread < min_spread:
        raise TrainingFailure(
            f"training failed: loss {fit.loss:.4f} (chance {fit.chance_loss:.4f}, ln 2 = {math.log(2):.4f}), "
            f"prediction spread {fit.prediction_spread:.2e}; a round at chance is a failure, not a data point"
        )


class LinearProbe:
    """L2-regularised softmax regression on (n, m, D) patch features, fitted by damped Newton iterations.

    Every patch of a labelled candidate is a training sample with the candidate's label, weighted 1/m (each
    candidate counts once). The labelled set goes to the device padded to a bucketed size (zero weight on the
    padding), so a new round compiles only when the set outgrows its bucket. ``l2`` multiplies 0.5 * ||W||^2
    (not the bias) added to the mean loss; ``newton_steps`` iterations, each halving its step until the objective
    does not increase (at most ``max_halvings`` times); it stops early once the gradient norm is below
    ``tolerance``. ``max_traces`` (tests) wraps the jitted fit in ``chex.assert_max_traces``.
    """

    def __init__(self, n_classes: int = 2, l2: float = 1e-2, newton_steps: int = 30, max_halvings: int = 20,
                 bucket_min: int = 32, guard_margin: float = 0.05, min_spread: float = 1e-3,
                 tolerance: float = 1e-6, max_traces: int | None = None):
        if n_classes < 2 or not l2 > 0 or newton_steps < 1:
            raise ValueError(f"LinearProbe: n_classes={n_classes} must be >= 2, l2={l2} > 0, "
                             f"newton_steps={newton_steps} >= 1")
        self.n_classes, self.l2 = int(n_classes), float(l2)
        self.newton_steps, self.max_halvings = int(newton_steps), int(max_halvings)
        self.tolerance = float(tolerance)
        self.bucket_min = int(bucket_min)
        self.guard_margin, self.min_spread = float(guard_margin), float(min_spread)
        guard = (lambda f: chex.assert_max_traces(f, n=max_traces)) if max_traces is not None else (lambda f: f)
        self._fit = jax.jit(guard(self._fit_impl))
        self._predict = jax.jit(self._predict_impl)

    # -- the objective ---------------------------------------------------------------------------------------
    def _logits(self, w_free, x):
        # the last class is the reference (logit 0): K - 1 free columns, so the Hessian is not singular
        logits = x @ w_free[:-1] + w_free[-1]
        return jnp.concatenate([logits, jnp.zeros((*logits.shape[:-1], 1), logits.dtype)], axis=-1)

    def _objective(self, w_flat, x, y, sample_weight):
        w = w_flat.reshape(x.shape[-1] + 1, self.n_classes - 1)
        logits = self._logits(w, x)
        nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1)[:, 0]
        data = jnp.sum(sample_weight * nll) / jnp.sum(sample_weight)
        # the bias gets 1e-3 of the weights' penalty: it stays finite when a training set is separable
        return data + 0.5 * self.l2 * (jnp.sum(w[:-1] ** 2) + 1e-3 * jnp.sum(w[-1] ** 2)), data

    def _fit_impl(self, features, labels, count):
        n, m, d = features.shape
        x = features.reshape(n * m, d)
        y = jnp.repeat(labels, m)
        sample_weight = jnp.repeat((jnp.arange(n) < count).astype(jnp.float32), m)
        objective = lambda w: self._objective(w, x, y, sample_weight)[0]
        size = (d + 1) * (self.n_classes - 1)

        x1 = jnp.concatenate([x, jnp.ones((n * m, 1), x.dtype)], axis=1)
        free = self.n_classes - 1
        onehot = jax.nn.one_hot(y, self.n_classes)[:, :free]
        penalty = self.l2 * jnp.concatenate([jnp.ones((d,)), jnp.full((1,), 1e-3)])  # per row of W
        s = sample_weight / jnp.sum(sample_weight)

        def gradient(w):
            wm = w.reshape(d + 1, free)
            p = jax.nn.softmax(self._logits(wm, x))[:, :free]
            return (x1.T @ (s[:, None] * (p - onehot)) + penalty[:, None] * wm).reshape(-1), p

        def newton(w):
            # the softmax regression's exact gradient and Hessian (one weighted X^T A X per class pair)
            g, p = gradient(w)
            a = s[:, None, None] * (jnp.eye(free)[None] * p[:, :, None] - p[:, :, None] * p[:, None, :])
            h = jnp.einsum("na,njk,nb->ajbk", x1, a, x1).reshape(size, size)
            h = h + jnp.diag(jnp.repeat(penalty, free))
            direction = jnp.linalg.solve(h, g)
            f0 = objective(w)

            def worse(state):
                step, k = state
                return (objective(w - step * direction) > f0) & (k < self.max_halvings)

            step, _ = jax.lax.while_loop(worse, lambda st: (st[0] * 0.5, st[1] + 1), (jnp.float32(1.0), 0))
            return jnp.where(objective(w - step * direction) <= f0, w - step * direction, w)

        def not_converged(state):
            w, k = state
            return (k < self.newton_steps) & (jnp.linalg.norm(gradient(w)[0]) > self.tolerance)

        w, _ = jax.lax.while_loop(not_converged, lambda st: (newton(st[0]), st[1] + 1),
                                  (jnp.zeros((size,), jnp.float32), 0))
        _, data_loss = self._objective(w, x, y, sample_weight)
        w = w.reshape(d + 1, self.n_classes - 1)
        p = jax.nn.softmax(self._logits(w, x))[:, 0]
        valid = sample_weight > 0
        spread = jnp.max(jnp.where(valid, p, -jnp.inf)) - jnp.min(jnp.where(valid, p, jnp.inf))
        return w, data_loss, spread

    def _predict_impl(self, weights, features):
        return jax.nn.softmax(self._logits(weights, features), axis=-1)

    # -- public -----------------------------------------------------------------------------------------------
    def fit(self, features: np.ndarray, labels: np.ndarray, guard: bool = True) -> ProbeFit:
        """Fit on (n, m, D) ``features`` of n labelled candidates; with ``guard``, ``check_fit`` the result."""
        features = np.asarray(features, np.float32)
        labels = np.asarray(labels, np.int32)
        n = len(labels)
        if n == 0 or features.shape[0] != n or features.ndim != 3:
            raise ValueError(f"fit: features {features.shape} must be (n, m, D) for n = {n} > 0 labels")
        padded, padded_labels = pad_to_bucket(features, labels, self.bucket_min)
        weights, loss, spread = self._fit(padded, padded_labels, np.int32(n))
        fit = ProbeFit(np.asarray(weights), float(loss), chance_loss(labels, self.n_classes), float(spread))
        if not np.isfinite(fit.loss) or not np.all(np.isfinite(fit.weights)):
            raise TrainingFailure(f"training failed: loss {fit.loss}, non-finite weights")
        if guard:
            check_fit(fit, self.guard_margin, self.min_spread)
        return fit

    def predict(self, fit: ProbeFit, features: np.ndarray) -> np.ndarray:
        """(n, m, K) class probabilities of every patch from (n, m, D) features."""
        return np.asarray(self._predict(jnp.asarray(fit.weights), jnp.asarray(features, jnp.float32)))
