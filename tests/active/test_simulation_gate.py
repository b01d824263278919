"""The AL simulation's headroom pool and gate: intensity-matched negatives, the informative/uninformative decision,
and the saving's bootstrap interval (experiments/active_learning_sim.py)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from genesis_jax.active.pool import box_mean_intensity, matched_organ_pools
from genesis_jax.evaluation.metrics import roc_auc

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


@pytest.fixture(scope="module")
def sim():
    spec = importlib.util.spec_from_file_location("active_learning_sim", EXPERIMENTS / "active_learning_sim.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gate_passes_only_with_enough_headroom(sim):
    ok = sim.headroom_gate([0.80, 0.84], [0.70, 0.72], 0.05)
    assert ok["informative"] and ok["headroom"] == pytest.approx(0.11)
    flat = sim.headroom_gate([0.80, 0.84], [0.79, 0.81], 0.05)  # one random round already reaches the ceiling
    assert not flat["informative"] and flat["headroom"] == pytest.approx(0.02)
    assert sim.headroom_gate([0.75], [0.70], 0.05)["informative"]  # the threshold itself counts as informative


def test_last_line_reports_a_saving_only_for_an_informative_pool(sim):
    saving = {"saving": 0.25, "saving_ci": [-0.1, 0.5]}
    line = sim.final_line(saving, sim.headroom_gate([0.9], [0.7], 0.05))
    assert line == "annotation_saving_vs_random: 25.0% (95% CI -10.0% to 50.0%)"
    line = sim.final_line(saving, sim.headroom_gate([0.8], [0.79], 0.05))
    assert line.startswith("annotation_saving_vs_random: uninformative (headroom 0.010 < 0.05")
    assert "%" not in line
    never = sim.final_line({"saving": None, "saving_ci": [-np.inf, 0.2]}, sim.headroom_gate([0.9], [0.7], 0.05))
    assert never == "annotation_saving_vs_random: not reached (95% CI not reached to 20.0%)"


def test_saving_and_its_paired_bootstrap_interval(sim):
    x = np.array([0, 8, 16, 24])
    base = np.array([[0.5, 0.6, 0.7, 0.8]] * 4) + np.linspace(-0.01, 0.01, 4)[:, None]
    fast = np.array([[0.5, 0.8, 0.82, 0.84]] * 4) + np.linspace(-0.01, 0.01, 4)[:, None]
    s = sim.saving_ci(x, fast, base, n_boot=200)
    # random reaches 0.8 at 24 labels, the fast arm at 8: a saving of 2/3, inside its interval
    assert s["saving"] == pytest.approx(2 / 3, abs=0.02)
    assert s["saving_ci"][0] <= s["saving"] <= s["saving_ci"][1] and s["alc_diff"][0] > 0
    slow = base - 0.1  # never reaches the target: no saving, and every resample says so
    never = sim.saving_ci(x, slow, base, n_boot=50)
    assert never["saving"] is None and never["not_reached_share"] == 1.0


def test_matched_pool_removes_the_intensity_shortcut():
    """Negatives in two organs, one darker and one brighter than the positive organ: drawn at random they would
    separate by brightness; the matched pool's raw box-mean AUC is near 0.5, and pool and test share no slice."""
    rng = np.random.default_rng(0)
    shape = (48, 48, 24)
    image = rng.normal(0.0, 0.03, shape).astype(np.float32)
    positive, dark, bright = (np.zeros(shape, bool) for _ in range(3))
    positive[4:22, 4:44], dark[26:44, 4:24], bright[26:44, 24:44] = True, True, True
    image += 0.50 * positive + 0.40 * dark + 0.55 * bright
    image[26:44, 24:44] += np.linspace(0, 0.3, 20)[None, :, None]  # the bright organ spans a wide range
    pool, test = matched_organ_pools(image, positive, dark | bright, 60, 40, context_size=8, box_size=4,
                                     positive_fraction=0.3, seed=1)
    assert len(pool) == 60 and pool.labels.sum() == 18 and pool.contexts.shape == (60, 8, 8, 1)
    assert len(test) == 40 and test.labels.sum() == 12
    z_pool = {int(i.split("_")[-1]) for i in pool.ids}
    z_test = {int(i.split("_")[-1]) for i in test.ids}
    assert not z_pool & z_test
    raw = roc_auc(pool.labels, box_mean_intensity(pool.contexts, 4))
    assert abs(raw - 0.5) < 0.2
    with pytest.raises(ValueError, match="empty"):
        matched_organ_pools(image, positive, np.zeros(shape, bool), 10, 10)
