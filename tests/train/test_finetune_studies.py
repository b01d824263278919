"""The 2D studies (experiments/_study.py, annotation_efficiency.py, liver_demo.py): the statistics compute what they
say, labelled subsets are nested and paired, the run cache reuses only identical runs, and the tiny studies run end
to end on the sample CTs (skipped when they cannot be had) with the liver demo reusing the study's runs."""

import importlib
import itertools
import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from genesis_jax.models import build_model
from genesis_jax.models.weights import save_weights

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def _module(name):
    """An experiments/ script as a module (they import each other by name from that directory)."""
    if str(EXPERIMENTS) not in sys.path:
        sys.path.insert(0, str(EXPERIMENTS))
    return importlib.import_module(name)


def test_summary_statistics():
    study = _module("_study")
    assert study.mean_sd([1.0, 3.0]) == (2.0, pytest.approx(np.sqrt(2.0)))
    assert study.mean_sd([0.5]) == (0.5, 0.0)
    # constant differences: the interval collapses on them; mixed ones: it brackets the mean
    assert study.paired_bootstrap([0.1, 0.1, 0.1]) == pytest.approx((0.1, 0.1, 0.1))
    m, lo, hi = study.paired_bootstrap([-0.2, 0.0, 0.1, 0.3, 0.5], n_boot=2000)
    assert m == pytest.approx(0.14) and lo < m < hi and lo >= -0.2 and hi <= 0.5
    assert study.area_under_curve([1, 2, 3], [0.0, 1.0, 1.0]) == pytest.approx(0.75)
    assert study.fmt_ci((0.1, -0.05, 0.2)) == "+0.100 (95% CI -0.050 to +0.200)"


def test_labelled_subsets_are_nested_per_seed_and_differ_across_seeds():
    study = _module("_study")
    pool = list(range(40, 74))
    subsets = [study.labelled_subset(pool, k, seed=3) for k in (2, 4, 8, None)]
    for small, large in itertools.pairwise(subsets):
        assert set(small) < set(large)
    assert subsets[-1] == pool and len(subsets[0]) == 2
    assert study.labelled_subset(pool, 8, seed=3) != study.labelled_subset(pool, 8, seed=4)


def test_run_steps_gives_small_subsets_the_base_budget_and_large_ones_enough_passes():
    study = _module("_study")
    # the study's rule (annotation_efficiency.MIN_EPOCHS: spleen 50, liver 100 passes, batch 4): 2/4/8 slices keep
    # their 200 steps, all slices (spleen 24, liver 34) get 300 and 850
    assert [study.run_steps(k, 200, 50, 4) for k in (2, 4, 8, 16, 24)] == [200, 200, 200, 200, 300]
    assert [study.run_steps(k, 200, 100, 4) for k in (2, 4, 8, 34)] == [200, 200, 200, 850]
    assert study.run_steps(34, 200, 0, 4) == 200  # min_epochs 0: the fixed budget
    with pytest.raises(ValueError, match="n_labelled=0"):
        study.run_steps(0, 200, 50, 4)


def test_run_cache_reuses_only_the_same_recipe(tmp_path):
    study = _module("_study")
    calls = []

    def run(run_dir):
        calls.append(run_dir)
        run_dir.mkdir(parents=True)
        return {"dice": 0.5 + len(calls)}

    first, cached = study.cached_run(tmp_path / "r", {"steps": 10}, run)
    assert not cached and first == {"dice": 1.5}
    assert study.cached_run(tmp_path / "r", {"steps": 10}, run) == (first, True) and len(calls) == 1
    assert study.cached_run(tmp_path / "r", {"steps": 20}, run) == ({"dice": 2.5}, False) and len(calls) == 2


@pytest.fixture
def restore_jax_config():
    saved = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs,
             jax.config.jax_default_prng_impl)
    yield
    jax.config.update("jax_compilation_cache_dir", saved[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", saved[1])
    jax.config.update("jax_default_prng_impl", saved[2])


@pytest.mark.slow
def test_tiny_studies_end_to_end_on_the_sample_ct(tmp_path, capsys, restore_jax_config):
    from genesis_jax.data.samples import SampleDataUnavailable, fetch_samples

    try:
        fetch_samples()
    except SampleDataUnavailable as err:
        pytest.skip(f"sample CTs unavailable: {err}")
    study = _module("annotation_efficiency")
    # stand-in Genesis weights of the tiny study network (the study's own pre-training is not what is tested here)
    model_config = study.defaults(tiny=True)["model"]
    model = build_model(model_config)
    variables = jax.jit(lambda k: model.init(k, np.zeros((1, 64, 64, 1), np.float32), train=False))(jax.random.key(1))
    save_weights(tmp_path / "pretrained", variables, model_config)
    common = ["--tiny", "--seeds", "0", f"--init={tmp_path / 'pretrained'}", f"--workdir={tmp_path / 'runs'}",
              f"--results={tmp_path / 'results'}"]
    assert study.main([*common, "--ks", "0"]) == 0  # all labelled slices: the liver demo's runs
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("annotation_efficiency: liver pretrained-scratch Dice")
    assert any(line.startswith("| liver | 34 (all) |") and "95% CI" in line for line in lines)
    raw = json.loads((tmp_path / "results" / "annotation_efficiency.json").read_text())
    assert sorted((r["all"], r["arm"]) for r in raw["runs"]) == [(True, "pretrained"), (True, "scratch")]
    assert all(r["validation"] for r in raw["runs"])  # the convergence curve of every run is kept
    assert (tmp_path / "results" / "annotation_efficiency.png").stat().st_size > 1000
    # the liver demo is the all-slices point of the same study: it reads the cached runs instead of training
    demo = _module("liver_demo")
    assert demo.main(common) == 0
    out = capsys.readouterr().out
    trained = [line for line in out.splitlines() if "test Dice" in line]
    assert len(trained) == 2 and all("cached)" in line for line in trained)  # no run was trained again
    assert out.strip().splitlines()[-1].startswith("liver_dice: scratch=")
    demo_raw = json.loads((tmp_path / "results" / "liver_demo.json").read_text())
    study_all = {r["arm"]: r["dice"] for r in raw["runs"] if r["all"]}
    assert {r["arm"]: r["dice"] for r in demo_raw["runs"]} == study_all
