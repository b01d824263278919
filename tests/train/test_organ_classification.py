"""experiments/organ_classification.py: balanced accuracy, the grid patches keep their centre's class, labelled
draws are k per class and nested, weights without a passing gate are refused, and the --tiny study runs end to end
on the sample CTs (skipped when they cannot be had) with its gate line first and its last line in the published
format."""

import importlib
import json
import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.train.test_finetune_studies import restore_jax_config  # noqa: F401 (a fixture)

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
NUMBER = r"[+-]\d\.\d{3}"
CI = rf"{NUMBER} \(95% CI {NUMBER} to {NUMBER}, sign-flip p [0-9.e-]+\)"


@pytest.fixture(scope="module")
def oc():
    if str(EXPERIMENTS) not in sys.path:
        sys.path.insert(0, str(EXPERIMENTS))
    return importlib.import_module("organ_classification")


def test_balanced_accuracy_is_the_mean_per_class_recall(oc):
    labels = np.array([0, 0, 0, 0, 1, 2, 2])
    predicted = np.array([0, 0, 0, 1, 1, 0, 2])
    assert oc.balanced_accuracy(labels, predicted) == pytest.approx((3 / 4 + 1 + 1 / 2) / 3)
    assert oc.balanced_accuracy(labels, labels) == 1.0


def test_grid_patches_are_centred_on_their_class_and_capped(oc):
    image = np.random.default_rng(0).uniform(0, 1, (40, 36, 3)).astype(np.float32)
    classes = np.full(image.shape, -1, np.int16)
    classes[4:20, 4:30] = 0
    classes[22:38, 4:30] = 5
    patches = oc.cut_patches(image, classes, [0, 2], cap=10, seed=0)
    assert patches.counts()[0] == 10 and patches.counts()[5] == 10 and sum(patches.counts()) == 20
    assert set(patches.centres[:, 2]) <= {0, 2}
    assert np.all(patches.centres[:, :2] % oc.GRID == oc.GRID // 2)  # the de-duplication grid
    side = oc.PATCH + 2 * oc.SHIFT
    assert patches.contexts.shape == (20, side, side, 1) and patches.centre.shape == (20, oc.PATCH, oc.PATCH, 1)
    for (x, y, z), c, context in zip(patches.centres, patches.labels, patches.contexts):
        assert classes[x, y, z] == c
        assert context[side // 2, side // 2, 0] == image[x, y, z]  # the crop is centred on the centre voxel


def test_labelled_rows_are_k_per_class_and_nested(oc):
    labels = np.repeat(np.arange(len(oc.CLASS_NAMES)), 20)
    pool = oc.Patches(np.zeros((len(labels), 4, 4, 1), np.float32), labels, np.zeros((len(labels), 3), int))
    small, large = oc.labelled_rows(pool, 2, seed=5), oc.labelled_rows(pool, 4, seed=5)
    assert np.bincount(labels[small]).tolist() == [2] * len(oc.CLASS_NAMES) and set(small) < set(large)
    assert oc.labelled_rows(pool, None, seed=5) == list(range(len(labels)))
    assert oc.labelled_rows(pool, 2, seed=6) != small


def _weights(directory: Path, passed: bool) -> Path:
    from genesis_jax.models import build_model
    from genesis_jax.models.weights import save_weights

    cfg = dict(name="genesis_unet", variant="keras", ndim=2, base_width=2, depth=2, in_channels=1, num_classes=1,
               head_activation="sigmoid", dtype="float32")
    variables = build_model(cfg).init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)), train=False)
    gate = {"passed": passed, "restoration_mse": 0.01, "batch_mean_mse": 0.04, "ratio_to_batch_mean": 0.25,
            "clean_identity_mse": 0.001, "max_ratio": 0.7, "max_clean_mse": 0.005}
    return save_weights(directory, variables, cfg, {"pretext": "genesis", "step": 8, "pretext_gate": gate})


def test_weights_that_failed_their_gate_are_refused(oc, tmp_path, capsys, restore_jax_config):
    weights = _weights(tmp_path / "failed", passed=False)
    assert oc.main(["--weights", str(weights), f"--workdir={tmp_path / 'work'}", f"--results={tmp_path}"]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("gate genesis (") and "FAILED, not transferred" in lines[0]
    assert "refused" in lines[-1] and not (tmp_path / "organ_classification.md").exists()


def test_tiny_study_end_to_end_on_the_sample_cts(oc, tmp_path, capsys, restore_jax_config):
    from genesis_jax.data.samples import SampleDataUnavailable, fetch_samples

    try:
        fetch_samples()
    except SampleDataUnavailable as err:
        pytest.skip(f"sample CTs unavailable: {err}")
    weights = _weights(tmp_path / "gated", passed=True)
    args = ["--tiny", "--weights", str(weights), f"--workdir={tmp_path / 'work'}", f"--results={tmp_path / 'out'}"]
    assert oc.main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("gate genesis (") and "PASSED" in lines[0]  # the gate of the weights used, first
    assert re.fullmatch(rf"pretrained_minus_scratch_linear_probe_in_domain: k=1 {CI}, k=2 {CI}, k=all {CI}",
                        lines[-1]), lines[-1]
    raw = json.loads((tmp_path / "out" / "organ_classification.json").read_text())
    for learner, ks in (("linear_probe", ["1", "2", "all"]), ("fine_tuning", ["1", "all"])):
        groups = raw["groups"][learner]
        assert sorted(groups) == ["genesis", "scratch"] and list(groups["scratch"]) == ks
        for k in ks:  # paired: the same replicates and labelled counts in both arms, 3 replicates
            assert [(r["seed"], r["labelled"]) for r in groups["scratch"][k]] == [
                (r["seed"], r["labelled"]) for r in groups["genesis"][k]] and len(groups["scratch"][k]) == 3
    assert groups["scratch"]["1"][0]["labelled"] == len(oc.CLASS_NAMES)
    assert raw["control"] and raw["control"]["linear_probe"]["in_domain"]["n"] == 3
    assert (tmp_path / "out" / "organ_classification.png").stat().st_size > 1000
    # the same command again reads every group from the cache (resumable, nothing retrained)
    assert oc.main(args) == 0
    again = capsys.readouterr().out.strip().splitlines()
    assert all(line.endswith("cached)") for line in again if "replicates" in line) and again[-1] == lines[-1]
