"""Continual fine-tuning of a candidate classifier between active-learning rounds (ACFT and its alternatives).

Strategies (MedIA'21 terminology; Q = the newly labelled candidates, L = the ones labelled before,
H = the candidates of L that the current model misclassifies, judged on the mean of their patch predictions):

| strategy  | starts from          | trains on | note                                          |
|-----------|----------------------|-----------|-----------------------------------------------|
| 'acft_hq' | the previous model   | H u Q     | the proposed ACFT(HQ), default                |
| 'acft_lq' | the previous model   | L u Q     | continual on all labels                       |
| 'acft_q'  | the previous model   | Q         | new labels only (forgets)                     |
| 'aft_lq'  | the initial model M0 | L u Q     | all labels from M0 every round (RFT when Q is random) |

Published: the continual learning rate is 1/10 of the restart one: ``learning_rate`` is the continual rate and
'aft_lq' (a restart from M0) trains with ``learning_rate * restart_lr_factor`` (10 by default and in every config).

A single-class H u Q (all the new labels of one class and no misclassified earlier candidate of the other, common
when the selection favours one class or the model already fits the old labels) would teach the model one answer.
With the pool's ``labels`` given, ACFT(HQ) then mixes in earlier labelled candidates of each missing class (the
most recently labelled first, up to an equal share: ceil(|H u Q| / classes present) per missing class); nothing is
mixed in when no candidate of that class has been labelled yet. ``RoundPlan.n_mixed`` counts them.

Every patch of a labelled candidate inherits its label. The training set goes to the device padded to a bucketed
size (powers of two from ``bucket_min``), and the number of steps is a traced loop bound, so a new round compiles
only when the labelled set outgrows its bucket. Each step draws ``batch_size`` (candidate, patch) pairs on the
device (uniformly over candidates, or with ``class_balanced`` uniformly over the classes present first).

BatchNorm: M_0's statistics are set once to precise population statistics of a sample of the pool
(``calibrate``, on by default in the session and the simulation: :mod:`genesis_jax.train.precise_bn` inside one
jitted function), and fine-tuning keeps them fixed (the network runs in
inference mode, only weights, scales and biases learn). Training with batch statistics would normalise each
batch of H u Q (selected to be hard, bright, rare) differently from the pool it is then applied to: in our
simulations that flipped the ranking of easy candidates after a few ACFT(HQ) rounds.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from genesis_jax.active.patches import PatchSet, PoolPredictor, extract_patch
from genesis_jax.train.precise_bn import batch_moments, merge_batch_stats, pool_moments

Strategy = Literal["acft_hq", "acft_lq", "acft_q", "aft_lq"]
STRATEGIES = ("acft_hq", "acft_lq", "acft_q", "aft_lq")


@dataclasses.dataclass(frozen=True)
class RoundPlan:
    """What one round trains: from which weights, on which candidate indices, at which learning rate factor."""

    from_initial: bool
    train_indices: np.ndarray
    n_new: int
    n_misclassified: int
    n_mixed: int = 0  # ACFT(HQ): earlier labelled candidates of a class missing from H u Q


def misclassified(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Boolean per candidate: the argmax of the mean patch prediction differs from the label. probs: (n, m, K)."""
    return np.argmax(np.asarray(probs).mean(axis=1), axis=-1) != np.asarray(labels)


def _missing_class_candidates(train: np.ndarray, old_indices: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Earlier labelled candidates of the classes absent from ``train`` (see the module docstring)."""
    present = np.unique(labels[train])
    share = int(np.ceil(len(train) / max(len(present), 1)))
    chosen = [old_indices[labels[old_indices] == c][::-1][:share]  # the most recently labelled first
              for c in np.unique(labels[old_indices]) if c not in present and c >= 0]
    return np.concatenate(chosen) if chosen else np.zeros((0,), np.int64)


def plan_round(
    strategy: Strategy,
    new_indices: np.ndarray,
    old_indices: np.ndarray,
    old_misclassified: np.ndarray | None,
    labels: np.ndarray | None = None,
) -> RoundPlan:
    """The training set and start weights of one round for ``strategy`` (see the module table). ``labels`` (of the
    whole pool, read at the labelled indices) lets ACFT(HQ) complete a single-class H u Q (module docstring)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    new_indices = np.asarray(new_indices, np.int64)
    old_indices = np.asarray(old_indices, np.int64)
    n_wrong = n_mixed = 0
    if strategy == "acft_hq":
        if old_misclassified is None:
            raise ValueError("strategy 'acft_hq' needs the current model's predictions of the labelled candidates")
        hard = old_indices[np.asarray(old_misclassified, bool)]
        n_wrong = len(hard)
        train = np.concatenate([new_indices, hard])
        if labels is not None:
            mixed = _missing_class_candidates(train, old_indices, np.asarray(labels))
            n_mixed = len(mixed)
            train = np.concatenate([train, mixed])
    elif strategy == "acft_q":
        train = new_indices
    else:
        train = np.concatenate([new_indices, old_indices])
    return RoundPlan(strategy == "aft_lq", train, len(new_indices), n_wrong, n_mixed)


def bucket_size(n: int, bucket_min: int) -> int:
    """The padded size of a training set of n candidates: bucket_min, then powers of two."""
    size = max(1, bucket_min)
    while size < n:
        size *= 2
    return size


def pad_to_bucket(inputs: np.ndarray, labels: np.ndarray, bucket_min: int) -> tuple[np.ndarray, np.ndarray]:
    """``inputs`` and ``labels`` of n candidates zero-padded to :func:`bucket_size` rows, so one compiled fit serves
    every training-set size of the bucket (the fit masks the padding by n)."""
    size = bucket_size(len(labels), bucket_min)
    padded = np.zeros((size, *inputs.shape[1:]), np.float32)
    padded[: len(labels)] = inputs
    padded_labels = np.zeros((size,), np.int32)
    padded_labels[: len(labels)] = labels
    return padded, padded_labels


class ContinualLearner:
    """A classifier (flax module returning logits) fine-tuned round after round on candidate patch sets.

    Holds the jitted functions only; weights go in and out explicitly, so one learner serves many runs (seeds,
    strategies) with one set of compilations.
    """

    def __init__(
        self,
        model: nn.Module,
        patch_set: PatchSet,
        *,
        strategy: Strategy = "acft_hq",
        learning_rate: float = 1e-3,
        restart_lr_factor: float = 10.0,
        epochs: float = 5.0,
        batch_size: int = 16,
        min_steps: int = 10,
        max_steps: int = 200,
        bucket_min: int = 32,
        calibration_size: int = 64,
        chunk_size: int = 256,
        device_batch: int = 32,
        class_balanced: bool = False,
        max_traces: int | None = None,
    ):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if not restart_lr_factor > 0:
            raise ValueError(f"restart_lr_factor must be > 0 (published: 10, the restart rate over the continual one), "
                             f"got {restart_lr_factor}")
        if calibration_size % batch_size:
            raise ValueError(f"calibration_size ({calibration_size}) must be a multiple of batch_size ({batch_size})")
        self.model = model
        self.patch_set = patch_set
        self.strategy = strategy
        self.learning_rate = float(learning_rate)
        self.restart_lr_factor = float(restart_lr_factor)
        self.epochs = float(epochs)
        self.batch_size = int(batch_size)
        self.min_steps, self.max_steps = int(min_steps), int(max_steps)
        self.bucket_min = int(bucket_min)
        self.calibration_size = int(calibration_size)
        self.class_balanced = bool(class_balanced)
        guard = (lambda f: chex.assert_max_traces(f, n=max_traces)) if max_traces is not None else (lambda f: f)
        self.predictor = PoolPredictor(self.predict_patches, patch_set, chunk_size, device_batch, max_traces)
        self._fit = jax.jit(guard(self._fit_impl))
        self._calibrate = jax.jit(self._calibrate_impl)
        self._init = jax.jit(functools.partial(self.model.init, train=False))

    @property
    def n_classes(self) -> int:
        return int(getattr(self.model, "num_classes", 2))

    # -- inference -----------------------------------------------------------------------------------------
    def predict_patches(self, variables: Any, patches: jax.Array) -> jax.Array:
        """Softmax probabilities (B, K) of a batch of patches (inference mode)."""
        return jax.nn.softmax(self.model.apply(variables, patches, train=False), axis=-1)

    def init(self, key: jax.Array, context_shape: tuple[int, ...], calibration: np.ndarray | None = None) -> dict:
        """Fresh variables for contexts of spatial+channel shape ``context_shape``; with ``calibration``
        (calibration_size contexts of the pool) its BatchNorm statistics are calibrated on them."""
        dummy = jnp.zeros((1, *self.patch_set.patch_shape, context_shape[-1]), jnp.float32)
        variables = self._init(key, dummy)
        return variables if calibration is None else self.calibrate(variables, calibration, key)

    def calibrate(self, variables: Any, calibration: np.ndarray, key: jax.Array) -> dict:
        """``variables`` with BatchNorm statistics replaced by precise statistics of random patches of the
        (calibration_size, *spatial, C) ``calibration`` contexts."""
        calibration = np.asarray(calibration, np.float32)
        if calibration.shape[0] != self.calibration_size:
            raise ValueError(f"calibration sample has {calibration.shape[0]} contexts, expected {self.calibration_size}")
        if not variables.get("batch_stats"):
            return variables
        return self._calibrate(variables, calibration, key)

    def predict(self, variables: Any, contexts: Any, progress: bool = False) -> np.ndarray:
        """(n, m, K) patch probabilities of a pool, streamed from the host in fixed chunks."""
        return self.predictor(variables, contexts, progress=progress)

    # -- training ------------------------------------------------------------------------------------------
    def _random_patches(self, key: jax.Array, contexts: jax.Array) -> jax.Array:
        """One patch per context, each with a transform drawn at random from the patch set."""
        matrices = jnp.asarray(self.patch_set.matrices)
        offsets = jnp.asarray(self.patch_set.offsets)
        which = jax.random.randint(key, (contexts.shape[0],), 0, matrices.shape[0])
        return jax.vmap(lambda c, t: extract_patch(c, matrices[t], offsets[t], self.patch_set))(contexts, which)

    def _calibrate_impl(self, variables, calibration, key):
        patches = self._random_patches(key, calibration)
        batches = patches.reshape(-1, self.batch_size, *patches.shape[1:])
        # exact statistics of each batch (one lax.map step each), pooled into population statistics
        moments = jax.lax.map(lambda x: batch_moments(self.model, variables, x), batches)
        stats = pool_moments(moments, xp=jnp)
        return {**variables, "batch_stats": merge_batch_stats(variables["batch_stats"], stats)}

    def _fit_impl(self, variables, contexts, labels, count, key, n_steps, learning_rate):
        params = variables["params"]
        tx = optax.adam(learning_rate)
        opt_state = tx.init(params)

        def loss_fn(p, x, y):
            # inference-mode normalisation: the calibrated statistics stay fixed (see the module docstring)
            logits = self.model.apply({**variables, "params": p}, x, train=False)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        valid = jnp.arange(labels.shape[0]) < count
        if self.class_balanced:  # every class present equally likely, then a candidate of it uniformly
            per_class = jnp.zeros((self.n_classes,), jnp.float32).at[labels].add(valid.astype(jnp.float32))
            weights = jnp.where(valid, 1.0 / jnp.maximum(per_class[labels], 1.0), 0.0)
        else:
            weights = valid.astype(jnp.float32)
        weights = weights / jnp.sum(weights)

        def step(_, carry):
            p, state, k, total = carry
            k, k_cand, k_patch = jax.random.split(k, 3)
            idx = jax.random.choice(k_cand, labels.shape[0], (self.batch_size,), p=weights)
            x = self._random_patches(k_patch, contexts[idx])
            loss, grads = jax.value_and_grad(loss_fn)(p, x, labels[idx])
            updates, state = tx.update(grads, state, p)
            return optax.apply_updates(p, updates), state, k, total + loss

        params, _, _, total = jax.lax.fori_loop(0, n_steps, step, (params, opt_state, key, jnp.zeros((), jnp.float32)))
        return {**variables, "params": params}, total / jnp.maximum(n_steps, 1)

    def n_steps(self, n_candidates: int) -> int:
        """Steps for ``epochs`` passes over the training patches (n candidates x m patches), clipped."""
        steps = int(np.ceil(self.epochs * n_candidates * self.patch_set.m / self.batch_size))
        return int(np.clip(steps, self.min_steps, self.max_steps))

    def fit(
        self,
        variables: Any,
        contexts: np.ndarray,
        labels: np.ndarray,
        key: jax.Array,
        learning_rate: float | None = None,
    ) -> tuple[Any, float]:
        """Fine-tune ``variables`` on the patch sets of ``contexts`` (n, *spatial, C) with candidate ``labels``.
        Returns (new variables, mean training loss)."""
        contexts = np.asarray(contexts, np.float32)
        labels = np.asarray(labels, np.int32)
        n = len(labels)
        if n == 0 or len(contexts) != n:
            raise ValueError(f"fit needs one label per context, got {len(contexts)} contexts and {n} labels")
        padded, padded_labels = pad_to_bucket(contexts, labels, self.bucket_min)
        lr = self.learning_rate if learning_rate is None else learning_rate
        new, loss = self._fit(
            variables, padded, padded_labels, np.int32(n), key,
            np.int32(self.n_steps(n)), np.float32(lr),
        )
        loss = float(loss)
        if not np.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss}; lower the learning rate (now {lr})")
        return new, loss

    def run_round(
        self,
        variables: Any,
        initial_variables: Any,
        contexts: np.ndarray,
        labels: np.ndarray,
        new_indices: np.ndarray,
        old_indices: np.ndarray,
        key: jax.Array,
        old_probs: np.ndarray | None = None,
        strategy: Strategy | None = None,
    ) -> tuple[Any, RoundPlan, float]:
        """One ACFT round after the expert labelled ``new_indices``: plan with ``strategy`` (default: the
        learner's) and fine-tune.

        contexts/labels: the whole pool on the host (labels read only at the labelled indices). ``old_probs``:
        the current model's (len(old_indices), m, K) predictions of the previously labelled candidates (computed
        here when the strategy needs them and they are not given).
        """
        strategy = strategy or self.strategy
        old_indices = np.asarray(old_indices, np.int64)
        wrong = None
        if strategy == "acft_hq":
            if len(old_indices) and old_probs is None:
                old_probs = self.predict(variables, contexts[old_indices])
            wrong = misclassified(old_probs, labels[old_indices]) if len(old_indices) else np.zeros((0,), bool)
        plan = plan_round(strategy, new_indices, old_indices, wrong, labels)
        start = initial_variables if plan.from_initial else variables
        lr = self.learning_rate * (self.restart_lr_factor if plan.from_initial else 1.0)
        new, loss = self.fit(start, contexts[plan.train_indices], labels[plan.train_indices], key, lr)
        return new, plan, loss
