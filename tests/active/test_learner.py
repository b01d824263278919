"""Continual fine-tuning: round plans per strategy (a single-class H u Q completed from earlier labels), the
published learning rates (continual = restart / 10, in every config), buckets, precise BatchNorm statistics, no
recompilation."""

from pathlib import Path

import chex
import jax
import numpy as np
import pytest

from genesis_jax.active import ContinualLearner, aift_scores, make_patch_set, plan_round, select_candidates
from genesis_jax.active.learner import bucket_size, misclassified
from genesis_jax.models import build_model


def test_round_plans_follow_the_strategy_table():
    new, old = np.array([7, 8]), np.array([1, 2, 3])
    wrong = np.array([False, True, False])
    hq = plan_round("acft_hq", new, old, wrong)
    assert not hq.from_initial and hq.train_indices.tolist() == [7, 8, 2] and hq.n_misclassified == 1
    assert plan_round("acft_lq", new, old, None).train_indices.tolist() == [7, 8, 1, 2, 3]
    assert plan_round("acft_q", new, old, None).train_indices.tolist() == [7, 8]
    aft = plan_round("aft_lq", new, old, None)
    assert aft.from_initial and aft.train_indices.tolist() == [7, 8, 1, 2, 3]
    with pytest.raises(ValueError, match="needs the current model's predictions"):
        plan_round("acft_hq", new, old, None)
    with pytest.raises(ValueError, match="strategy"):
        plan_round("hq", new, old, wrong)


def test_single_class_hq_mixes_in_earlier_labels_of_the_missing_class():
    labels = np.array([0, 1, 1, 0, 1, 0, 0, 0, 0, -1])  # -1: not labelled yet
    old = np.array([1, 2, 3, 4])  # labelled earlier: classes 1, 1, 0, 1 (4 the most recent)
    new = np.array([5, 6, 7])  # this round: all class 0, and the model gets every earlier one right
    plan = plan_round("acft_hq", new, old, np.zeros(4, bool), labels)
    # ceil(3 / 1 class present) = 3 of class 1 at most, the most recently labelled first
    assert plan.train_indices.tolist() == [5, 6, 7, 4, 2, 1] and plan.n_mixed == 3
    assert set(labels[plan.train_indices]) == {0, 1}
    # both classes already present: nothing mixed in; and without labels the plan is the published H u Q
    both = plan_round("acft_hq", np.array([5, 4]), np.array([1, 2, 3]), np.zeros(3, bool), labels)
    assert both.train_indices.tolist() == [5, 4] and both.n_mixed == 0
    assert plan_round("acft_hq", new, old, np.zeros(4, bool)).train_indices.tolist() == [5, 6, 7]
    # no earlier label of the missing class exists: nothing to mix in
    assert plan_round("acft_hq", new, np.array([3]), np.zeros(1, bool), labels).n_mixed == 0


@pytest.mark.parametrize("variant", ["", ":tiny"])
def test_every_al_config_states_the_published_learning_rates(variant):
    from genesis_jax.config_loader import config_docstring, load_config

    spec = f"active/acft{variant}"
    config = load_config(spec)
    assert config.learner.restart_lr_factor == 10.0  # continual rate = restart rate / 10
    assert "1/10 of the restart" in config_docstring(spec)  # and its docstring says so


def test_restarts_train_at_ten_times_the_continual_rate(monkeypatch):
    learner = _tiny_learner()
    assert learner.restart_lr_factor == 10.0
    rates = []
    monkeypatch.setattr(learner, "fit", lambda v, c, y, k, lr: (rates.append(lr), (v, 0.0))[1])
    contexts, labels = _pool(8)
    for strategy in ("aft_lq", "acft_lq", "acft_hq"):
        learner.run_round({}, {}, contexts, labels, np.array([0, 1]), np.array([2, 3]), jax.random.key(0),
                          old_probs=np.full((2, 1, 2), 0.5), strategy=strategy)
    assert rates == pytest.approx([3e-2, 3e-3, 3e-3])
    with pytest.raises(ValueError, match="restart_lr_factor"):
        ContinualLearner(learner.model, learner.patch_set, restart_lr_factor=0.0)


def test_buckets_and_misclassification():
    assert [bucket_size(n, 32) for n in (1, 32, 33, 64, 65)] == [32, 32, 64, 64, 128]
    probs = np.array([[[0.9, 0.1], [0.6, 0.4]], [[0.2, 0.8], [0.7, 0.3]]])  # means: class 0, class 1
    assert misclassified(probs, np.array([0, 0])).tolist() == [False, True]


def _tiny_learner(max_traces=None):
    model = build_model(dict(name="genesis_classifier", variant="keras", ndim=3, base_width=2, depth=1,
                             num_classes=2, hidden=8, activation="none"))
    ps = make_patch_set((4, 4, 4), scales=(1.0, 1.25), flips_rotations=2)
    return ContinualLearner(model, ps, learning_rate=3e-3, batch_size=8, min_steps=5, max_steps=20, bucket_min=16,
                            calibration_size=16, chunk_size=32, device_batch=8, max_traces=max_traces)


def _pool(n, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    contexts = rng.normal(0, 0.1, (n, 6, 6, 6, 1)).astype(np.float32)
    contexts[labels == 1, 2:4, 2:4, 2:4] += 1.0  # a bright centre makes a positive
    return contexts, labels


def test_precise_batch_stats_reproduce_training_mode_normalisation():
    model = build_model(dict(name="genesis_classifier", variant="keras", ndim=3, base_width=2, depth=1,
                             num_classes=2, hidden=8, activation="none"))
    # patches = the whole context, untransformed
    learner = ContinualLearner(model, make_patch_set((6, 6, 6)), batch_size=8, calibration_size=8)
    contexts, _ = _pool(8)
    v = learner.init(jax.random.key(0), (6, 6, 6, 1))
    calibrated = jax.jit(learner._calibrate_impl)(v, contexts[:8] + 3.0, jax.random.key(1))
    x = contexts[:8] + 3.0
    train_mode, _ = learner.model.apply(v, x, train=True, mutable=["batch_stats"])
    eval_mode = learner.model.apply(calibrated, x, train=False)
    np.testing.assert_allclose(np.asarray(eval_mode), np.asarray(train_mode), atol=1e-4)


def test_rounds_with_the_same_pool_size_do_not_recompile():
    chex.clear_trace_counter()
    learner = _tiny_learner(max_traces=1)
    contexts, labels = _pool(40)
    v0 = learner.init(jax.random.key(0), contexts.shape[1:], contexts[:16])
    variables, labelled = v0, np.zeros(0, np.int64)
    available = np.ones(40, bool)
    for r in range(3):  # 4, 8, 12 labels: one bucket of 16, one pool size
        probs = learner.predict(variables, contexts)
        scores = aift_scores(probs)
        new = select_candidates(jax.random.key(r), scores, 4, "randomized", 5, available)
        variables, plan, loss = learner.run_round(variables, v0, contexts, labels, new, labelled,
                                                  jax.random.key(10 + r), probs[labelled])
        assert np.isfinite(loss) and plan.n_new == 4
        labelled = np.concatenate([labelled, new])
        available[new] = False
    assert not jax.tree.all(jax.tree.map(lambda a, b: np.array_equal(a, b), variables["params"], v0["params"]))
    # the guard is real: a labelled set beyond the bucket retraces and trips it
    with pytest.raises(AssertionError, match="traced > 1 times"):
        learner.fit(variables, contexts[:20], labels[:20], jax.random.key(0))


def test_fit_learns_a_separable_task():
    learner = _tiny_learner()
    contexts, labels = _pool(24, seed=1)
    learner.min_steps = learner.max_steps = 40
    v0 = learner.init(jax.random.key(0), contexts.shape[1:], contexts[:16])
    v, _ = learner.fit(v0, contexts, labels, jax.random.key(1), learning_rate=1e-2)
    test, test_labels = _pool(32, seed=2)
    accuracy = (np.argmax(learner.predict(v, test).mean(1), -1) == test_labels).mean()
    assert accuracy >= 0.9
