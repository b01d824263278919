"""The AL simulation (experiments/active_learning_sim.py): its statistics (paired t-interval, ALC, the saving on
monotone curves), the warm start, the multi-scan pool, a tiny end-to-end run, and the intensity-matched 2D pool."""

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


def test_paired_t_interval_matches_the_textbook_formula(sim):
    d = np.array([0.01, 0.03, -0.01, 0.02, 0.00])
    mean, lo, hi = sim.paired_t_interval(d)
    half = 2.7764451051977987 * d.std(ddof=1) / np.sqrt(5)  # t(0.975, 4)
    assert mean == pytest.approx(0.01) and lo == pytest.approx(0.01 - half) and hi == pytest.approx(0.01 + half)


def test_saving_is_read_on_monotone_mean_curves(sim):
    x = np.array([32, 48, 64, 80])
    base = np.array([[0.5, 0.6, 0.7, 0.8]] * 4) + np.linspace(-0.01, 0.01, 4)[:, None]
    # the fast arm dips after reaching the target: its running maximum still reaches it at 48 labels
    fast = np.array([[0.5, 0.8, 0.75, 0.84]] * 4) + np.linspace(-0.01, 0.01, 4)[:, None]
    s = sim.saving_ci(x, fast, base, n_boot=200)
    assert s["saving"] == pytest.approx(1 - 48 / 80, abs=0.01)
    assert s["ci"][0] <= s["saving"] <= s["ci"][1]
    assert sim.saving(x, base - 0.1, base) is None  # never reaches the target: no saving
    assert sim.alc(x, np.array([0.5, 0.5, 1.0, 1.0])) == pytest.approx(0.75)


def test_warm_start_holds_both_classes(sim):
    labels = np.zeros(500, np.int64)
    labels[[7, 300]] = 1
    for seed in range(5):
        picked = sim.warm_start(np.random.default_rng(seed), labels, 16)
        assert len(set(picked.tolist())) == 16 and set(labels[picked]) == {0, 1}


def test_tiny_simulation_end_to_end(sim, tmp_path, capsys):
    """The whole script on synthetic scans: pools, features, warm start, every arm, the endpoint lines."""
    rc = sim.main(["--tiny", "--config.sim.seeds=2", "--config.sim.rounds=2", f"--config.sim.out={tmp_path}"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    assert lines[0].startswith("M_0: randomly initialised encoder")
    assert lines[-2].startswith("alc_difference_aift_minus_random: ") and "(95% CI " in lines[-2]
    assert lines[-1].startswith("annotation_saving_vs_random: ")
    assert {p.name for p in tmp_path.iterdir()} >= {"curves.png", "results.json", "per_seed.md"}


def test_weights_directory_becomes_the_encoder(sim, tmp_path):
    """--weights DIR: the GenesisUNet of a weights directory (its ndim picks 2D or 3D contexts), variables as saved;
    without it a fresh encoder, named as the control arm."""
    import jax

    from genesis_jax.config_loader import load_config
    from genesis_jax.models.unet import GenesisUNet
    from genesis_jax.models.weights import save_weights

    config = load_config("active/simulation:tiny")
    cfg = dict(name="genesis_unet", variant="keras", ndim=3, base_width=2, depth=2, in_channels=1, num_classes=1,
               head_activation="sigmoid", dtype="float32")
    model = GenesisUNet(**{k: v for k, v in cfg.items() if k != "name"})
    variables = model.init(jax.random.key(3), np.zeros((1, 8, 8, 4, 1), np.float32), train=False)
    save_weights(tmp_path / "w", variables, cfg, {"pretext_gate": {"passed": False}})
    loaded, loaded_vars, desc = sim.load_encoder(config, str(tmp_path / "w"))
    assert loaded.ndim == 3 and "pre-trained encoder" in desc and '"passed": false' in desc
    np.testing.assert_array_equal(loaded_vars["params"]["encoder_0"]["conv_0"]["kernel"],
                                  variables["params"]["encoder_0"]["conv_0"]["kernel"])
    fresh, _, desc = sim.load_encoder(config, "")
    assert fresh.ndim == 2 and desc.startswith("randomly initialised encoder") and "control arm" in desc


def test_multi_scan_pool_is_deduplicated_balanced_and_split(sim):
    from genesis_jax.active.pool import multi_scan_pools

    scans = sim.synthetic_scans()
    pool, test = multi_scan_pools(scans, 120, 60, (12, 12), (8, 8), 3, positive_fraction=0.1, seed=0)
    assert pool.labels.sum() == 12 and test.labels.sum() == 6 and pool.contexts.shape == (120, 12, 12, 1)
    centres = {}
    for part, cands in (("pool", pool), ("test", test)):
        for cid in cands.ids:
            scan, xyz = cid.split("-")[-2:]
            centres.setdefault(part, []).append((scan, *map(int, xyz.split("_"))))
    for part, cs in centres.items():
        coords = np.array([c[1:] for c in cs])
        assert np.all(coords % 3 == 1)  # on the grid of step 3: no two centres closer than 3 voxels
        assert np.all((coords[:, 2] // 8) % 2 == (0 if part == "pool" else 1))  # alternating z blocks
    assert not set(pool.ids) & set(test.ids)


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
