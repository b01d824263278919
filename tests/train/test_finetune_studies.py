"""The 2D studies (experiments/_study.py statistics, experiments/_protocol.py, annotation_efficiency.py,
pretext_comparison.py): the paired statistics compute what they say (t-interval against scipy, the exact sign-flip
p on cases counted by hand and by brute force), the gapped split keeps its sets apart, labelled subsets are nested
and paired, and the tiny studies run end to end on the sample CTs (skipped when they cannot be had), their last
lines in the published format."""

import importlib
import itertools
import json
import re
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

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
    assert study.area_under_curve([1, 2, 3], [0.0, 1.0, 1.0]) == pytest.approx(0.75)


def test_t_interval_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    study = _module("_study")
    for df in (1, 2, 5, 19, 60):
        for p in (0.9, 0.975, 0.995):
            assert study.t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-6)
    d = np.random.default_rng(0).normal(0.05, 0.1, 20)
    mean, lo, hi = study.t_interval(d)
    want = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert mean == pytest.approx(d.mean()) and (lo, hi) == pytest.approx(want, rel=1e-6)
    assert np.isnan(study.t_interval([0.3])[1])


def test_sign_flip_p_is_exact():
    study = _module("_study")
    # n=3, all positive: only the observed pattern and its mirror reach |sum| 3: 2/8
    assert study.sign_flip_p([1.0, 1.0, 1.0]) == 0.25
    # [1, 2, -0.5]: |sums| over the 8 patterns are 3.5, 3.5, 2.5, 2.5, 1.5, 1.5, 0.5, 0.5; observed 2.5: 4/8
    assert study.sign_flip_p([1.0, 2.0, -0.5]) == 0.5
    assert study.sign_flip_p([1.0, -1.0]) == 1.0
    d = np.random.default_rng(1).normal(0.3, 1.0, 9)
    brute = np.mean([abs(np.dot(s, d)) >= abs(d.sum()) - 1e-12 for s in itertools.product((1, -1), repeat=9)])
    assert study.sign_flip_p(d) == pytest.approx(brute)
    assert study.sign_flip_p(np.full(20, 0.1)) == pytest.approx(2 / 2 ** 20)  # the vectorised chunks cover 2^20
    with pytest.raises(ValueError, match="2\\^25"):
        study.sign_flip_p(np.ones(25))


def test_gapped_blocks_keep_the_sets_apart():
    protocol = _module("_protocol")
    zs = list(range(69, 112))  # the liver's 43 slices in ct_abdomen
    blocks = protocol.gapped_blocks(zs, block=4, gap=2, pattern=("pool", "test", "val", "pool"))
    assert [b[0] for b in blocks["pool"]] == [69, 87, 93] and [b[0] for b in blocks["test"]] == [75, 99]
    assert [b[0] for b in blocks["val"]] == [81, 105]
    every = [(role, z) for role in ("pool", "test", "val") for blk in blocks[role] for z in blk]
    assert len({z for _, z in every}) == len(every)  # no slice in two sets
    for (r1, z1), (r2, z2) in itertools.combinations(every, 2):
        if r1 != r2:
            assert abs(z1 - z2) > 2  # at least two gap slices between sets
    assert sorted([z for _, z in every] + blocks["gap"][0]) == zs


def test_labelled_subsets_are_nested_per_seed_and_differ_across_seeds():
    study = _module("_study")
    pool = list(range(40, 74))
    subsets = [study.labelled_subset(pool, k, seed=3) for k in (2, 4, 8, None)]
    for small, large in itertools.pairwise(subsets):
        assert set(small) < set(large)
    assert subsets[-1] == pool and len(subsets[0]) == 2
    assert study.labelled_subset(pool, 8, seed=3) != study.labelled_subset(pool, 8, seed=4)


def test_paired_comparison_pairs_by_seed():
    protocol = _module("_protocol")
    arm = [{"seed": s, "in_domain": 0.5 + 0.1 * s} for s in (2, 0, 1)]
    ref = [{"seed": s, "in_domain": 0.4 + 0.1 * s} for s in (0, 1, 2, 3)]
    c = protocol.paired(arm, ref, "in_domain")
    assert c["seeds"] == [0, 1, 2] and c["n"] == 3 and c["mean"] == pytest.approx(0.1)
    assert c["p"] == 0.25 and protocol.fmt_paired(c).startswith("+0.100 (")


@pytest.fixture
def restore_jax_config():
    saved = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs,
             jax.config.jax_default_prng_impl)
    yield
    jax.config.update("jax_compilation_cache_dir", saved[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", saved[1])
    jax.config.update("jax_default_prng_impl", saved[2])


NUMBER = r"[+-]\d\.\d{3}"
CI = rf"{NUMBER} \(95% CI {NUMBER} to {NUMBER}"


def final_line_pattern(ks=(2, 4, 8)) -> str:
    """The annotation study's last line: per k the paired difference, its t-interval and the sign-flip p."""
    return "pretrained_minus_scratch_in_domain: " + ", ".join(rf"k={k} {CI}, sign-flip p [0-9.e-]+\)" for k in ks)


def test_final_line_pattern_matches_the_printed_form():
    protocol = _module("_protocol")
    c = {"mean": 0.0312, "lo": -0.004, "hi": 0.0664, "p": 0.0917, "n": 20}
    line = "pretrained_minus_scratch_in_domain: " + ", ".join(f"k={k} {protocol.fmt_paired(c)}" for k in (2, 4, 8))
    assert re.fullmatch(final_line_pattern(), line), line
    assert not re.fullmatch(final_line_pattern(), line.replace("k=8 +0.031", "k=8 n/a"))


@pytest.mark.slow
def test_tiny_studies_end_to_end_on_the_sample_ct(tmp_path, capsys, restore_jax_config):
    from genesis_jax.data.samples import SampleDataUnavailable, fetch_pyradiomics_samples, fetch_samples

    try:
        fetch_samples()
        fetch_pyradiomics_samples()
    except SampleDataUnavailable as err:
        pytest.skip(f"sample CTs unavailable: {err}")
    common = ["--tiny", f"--workdir={tmp_path / 'work'}", f"--results={tmp_path / 'results'}"]
    assert _module("annotation_efficiency").main(common) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("gate genesis (sample_corpus_2d, step 8")  # the gate of the weights used, first
    assert re.fullmatch(final_line_pattern(), lines[-1]), lines[-1]
    raw = json.loads((tmp_path / "results" / "annotation_efficiency.json").read_text())
    groups = raw["groups"]["liver"]
    assert sorted(groups) == ["genesis", "scratch"] and sorted(groups["scratch"]) == ["2", "4", "8", "all"]
    for k, runs in groups["scratch"].items():  # paired: the same slices per seed in both arms
        assert [r["slices"] for r in runs] == [r["slices"] for r in groups["genesis"][k]]
    assert raw["control"] and raw["control"]["in_domain"]["n"] == 3
    assert (tmp_path / "results" / "annotation_efficiency.png").stat().st_size > 1000
    # the liver demo is the all-slices point of the same study: it reads the cached runs instead of training
    assert _module("liver_demo").main(common) == 0
    demo = capsys.readouterr().out.strip().splitlines()
    assert all(line.endswith("cached)") for line in demo if "k=all" in line) and len(
        [line for line in demo if "k=all" in line]) == 2
    assert re.fullmatch(r"liver_dice: scratch=\d\.\d{3}\+-\d\.\d{3} pretrained=\d\.\d{3}\+-\d\.\d{3}", demo[-1])
    # the pretext comparison shares the protocol and the cached scratch / genesis groups
    assert _module("pretext_comparison").main(common) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert [line.split(" ")[1] for line in out[:3]] == ["genesis", "mim", "genesis_mim"]
    assert [line for line in out if "scratch" in line and "k=  2" in line][0].endswith("cached)")
    ci = rf"{CI}\)"
    assert re.fullmatch(rf"pretext_vs_scratch_in_domain_k4: genesis={ci} mim={ci} genesis_mim={ci}", out[-1]), out[-1]
    assert (tmp_path / "results" / "pretext_comparison.md").is_file()


def _tiny_weights(path, gate, pretext="genesis"):
    """A weights directory of the :tiny recipe's study network, its metadata holding ``gate`` (None: no record)."""
    import jax.numpy as jnp

    from genesis_jax.models import build_model
    from genesis_jax.models.weights import save_weights
    from genesis_jax.pretext.gate import RECORD_KEY

    config = _module("_protocol").tiny_recipe().model_config
    variables = build_model(config).init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 1)), train=False)
    metadata = {"pretext": pretext, "step": 77, **({RECORD_KEY: gate} if gate is not None else {})}
    return save_weights(path, jax.device_get(variables), config, metadata)


GATE = dict(restoration_mse=0.01865, batch_mean_mse=0.04078, image_mean_mse=0.03662, clean_identity_mse=0.003643,
            ratio_to_batch_mean=0.457, max_ratio=0.7, max_clean_mse=0.005, scored="all voxels")


def test_given_weights_are_refused_unless_their_gate_passed(tmp_path, capsys):
    """--weights: a failed or missing gate record stops the study in one line (exit 2) before anything runs;
    weights that passed give the study's first line and transfer into the study network."""
    from genesis_jax.models.weights import load_weights

    study = _module("annotation_efficiency")
    protocol = _module("_protocol")
    failed = _tiny_weights(tmp_path / "failed", dict(GATE, ratio_to_batch_mean=0.93, passed=False))
    unrecorded = _tiny_weights(tmp_path / "unrecorded", None)
    for weights, why in ((failed, "FAILED, not transferred"), (unrecorded, "no gate record"),
                         (tmp_path / "missing", "not a genesis_jax weights directory")):
        assert study.main(["--tiny", f"--weights={weights}", f"--workdir={tmp_path / 'work'}"]) == 2
        out, err = capsys.readouterr()
        assert not out and len(err.strip().splitlines()) == 1 and why in err, err
    assert not (tmp_path / "work").exists()  # refused before any pre-training, cache or result
    with pytest.raises(ValueError, match="pretext 'mim'"):
        protocol.given_weights(_tiny_weights(tmp_path / "mim", dict(GATE, passed=True), "mim"), "genesis")

    passed = _tiny_weights(tmp_path / "passed", dict(GATE, passed=True))
    pre = protocol.given_weights(passed, "genesis")
    assert pre["passed"] and pre["weights"] == str(passed) and len(pre["fingerprint"]) == 64
    assert protocol.gate_line(pre) == (
        "gate genesis (weights metadata: step 77): restoration MSE 0.01865 = 0.457 x batch-mean 0.04078 (<= 0.7), "
        f"clean identity MSE 0.003643 (<= 0.005): PASSED; weights {passed}")
    stored = jax.tree_util.tree_leaves(load_weights(passed)[0])
    variables = protocol._initial_variables(protocol.tiny_recipe(), protocol.weights_init(pre), seed=3)
    same = [np.array_equal(a, b) for a, b in zip(stored, jax.tree_util.tree_leaves(variables), strict=True)]
    assert sum(same) > len(same) // 2 and not all(same)  # transferred, the head re-initialised
