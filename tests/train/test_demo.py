"""The demo end to end, shortened: data, pre-training (packaged or in the demo), gate, preview, liver fine-tuning
(from the pre-trained weights only when they passed the gate), test Dice and overlay. On phantoms when asked (fast, offline, and loud about it); on the real sample CTs when they are in
the cache (offline too), tested on the other patient's scan."""

import pytest

from genesis_jax.cli.demo import PHANTOMS_ENV, TEST_SCAN, closing_lines, run_demo
from genesis_jax.data.samples import cache_root, samples_cached


def _check_story(tmp_path, summary):
    assert summary["pretrain"]["step"] == 2 and (tmp_path / "pretrain" / "weights" / "model_config.json").is_file()
    assert summary["pretrain"]["preview"].endswith(".png")
    ft = summary["finetune"]
    # only weights that passed their gate are transferred; a 2-step pre-training never does
    assert ft["init"] == (summary["pretrain"]["weights"] if summary["gate_passed"] else "scratch") and ft["step"] == 2
    assert 0.0 <= ft["test"]["dice"] <= 1.0 and ft["overlays"]
    gate = summary["pretrain"]["gate"]  # the quality gate of the pre-trained weights, passed or not
    assert {"restoration_mse", "batch_mean_mse", "clean_identity_mse", "passed"} <= set(gate)
    assert summary["gate_passed"] == gate["passed"]
    return ft


@pytest.mark.slow
def test_demo_on_phantoms_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv(PHANTOMS_ENV, "1")
    messages = []
    summary = run_demo(tmp_path, pretrain_steps=2, finetune_steps=2, cube=(16, 16, 8), precise_bn_batches=2,
                       log=messages.append)
    assert not summary["real_ct"] and summary["data"].startswith("synthetic CT phantoms, NOT real CT")
    assert any(m.startswith("demo: WARNING: using SYNTHETIC CT PHANTOMS") for m in messages)
    ft = _check_story(tmp_path, summary)
    assert "SYNTHETIC" in ft["data"] and TEST_SCAN not in ft["test_volumes"]


@pytest.mark.slow
@pytest.mark.skipif(not samples_cached(), reason=f"the sample CTs are not in {cache_root()} (run `genesis-jax data "
                                                 "samples` once with network access); this test never downloads")
def test_demo_on_the_sample_ct_tests_on_another_patient(tmp_path, monkeypatch):
    monkeypatch.delenv(PHANTOMS_ENV, raising=False)
    messages = []
    summary = run_demo(tmp_path, pretrain_steps=2, finetune_steps=2, cube=(16, 16, 8), precise_bn_batches=2,
                       log=messages.append)
    assert summary["real_ct"] and summary["data"].startswith("real CT")
    ft = _check_story(tmp_path, summary)
    assert ft["test_volumes"] == [TEST_SCAN] and ft["overlays"][0].endswith(f"{TEST_SCAN}_overlay.png")
    lines = closing_lines(summary, tmp_path / "summary.json")
    assert any(line.startswith("demo: test Dice ") and line.endswith(f"mm on {TEST_SCAN} (another patient)")
               for line in lines)
    scans = summary["pretrain"]["scans"]
    assert scans["train"] == ["ct_abdomen"] and TEST_SCAN not in scans["train"] + scans["validation"] + scans["test"]


def test_the_default_demo_needs_no_extras():
    """`pip install -e .` then `genesis-jax demo` (README command (a)) must read every scan: the test scan is a
    JPEG 2000 DICOM series, so pydicom is a core dependency and pillow (core) must decode JPEG 2000."""
    import re
    import tomllib
    from pathlib import Path

    from PIL import features

    from genesis_jax.data.samples import SAMPLES

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    core = {re.split(r"[<>=!~\[ ;]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}
    demo_images = [SAMPLES[name]["image"] for name in ("ct_abdomen", "ct_chest", TEST_SCAN)]
    if any(not image.endswith((".nii.gz", ".nii", ".mha")) for image in demo_images):  # a DICOM series directory
        assert "pydicom" in core and "pillow" in core
        assert features.check("jpg_2000"), "pillow without OpenJPEG cannot decode the JPEG 2000 test scan"


def test_closing_lines_are_human_and_say_when_the_gate_failed(tmp_path):
    gate = dict(restoration_mse=0.05, batch_mean_mse=0.048, clean_identity_mse=0.03, ratio_to_batch_mean=1.04,
                max_ratio=0.7, max_clean_mse=0.005, passed=False)
    summary = {"real_ct": True, "pretrain": {"gate": gate, "preview": "p.png"},
               "finetune": {"test": {"dice": 0.5416, "hd95": 178.49}, "overlays": ["o.png"]}}
    lines = closing_lines(summary, tmp_path / "summary.json")
    assert lines[0].startswith("demo: pre-training quality gate FAILED on the held-out validation data: restoration MSE 0.0500")
    assert f"demo: test Dice 0.542 HD95 178.5 mm on {TEST_SCAN} (another patient)" in lines
    assert not any("{" in line for line in lines)  # no dict reprs
    assert lines[-1].startswith("demo: your own scans next: genesis-jax data prepare --dataset=DIR")
    summary["pretrain"]["gate"] = {**gate, "passed": True, "ratio_to_batch_mean": 0.6}
    assert "gate passed" in closing_lines(summary, tmp_path / "summary.json")[0]


@pytest.mark.slow
@pytest.mark.skipif(not samples_cached(), reason=f"the sample CTs are not in {cache_root()} (run `genesis-jax data "
                                                 "samples` once with network access); this test never downloads")
def test_demo_fine_tunes_from_packaged_gated_weights(tmp_path, monkeypatch):
    """With packaged weights that passed their gate, the demo pre-trains nothing and transfers them."""
    import jax
    import jax.numpy as jnp

    from genesis_jax.cli import demo
    from genesis_jax.models import build_model, packaged
    from genesis_jax.models.weights import save_weights
    from genesis_jax.pretext.gate import RECORD_KEY

    monkeypatch.delenv(PHANTOMS_ENV, raising=False)
    cfg = dict(name="genesis_unet", variant="keras", ndim=3, base_width=2, depth=3, in_channels=1, num_classes=1,
               head_activation="sigmoid", dtype="float32")
    variables = build_model(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 8, 1)), train=False)
    gate = dict(restoration_mse=0.01, batch_mean_mse=0.04, image_mean_mse=0.03, clean_identity_mse=0.001,
                ratio_to_batch_mean=0.25, max_ratio=0.7, max_clean_mse=0.005, passed=True, scored="all voxels")
    made = save_weights(tmp_path / "made", jax.tree.map(lambda a: jax.device_get(a), variables), cfg,
                        {RECORD_KEY: gate, "step": 1234})
    pkg = tmp_path / "pkg"
    packaged.package_weights(made, demo.PACKAGED_WEIGHTS, "experiments/demo_pretraining.py (a test)", directory=pkg)
    monkeypatch.setattr(packaged, "PACKAGED_DIR", pkg)
    messages = []
    summary = run_demo(tmp_path / "demo", finetune_steps=2, cube=(16, 16, 8), precise_bn_batches=2,
                       log=messages.append)
    assert summary["gate_passed"] and summary["pretrain"]["packaged"].startswith("experiments/demo_pretraining.py")
    assert summary["pretrain"]["step"] == 1234 and "scans" not in summary["pretrain"]
    ft = summary["finetune"]
    assert ft["init"] == summary["pretrain"]["weights"] and ft["test"]["organ"] == "liver"
    assert 0.0 <= ft["test"]["dice"] <= 1.0 and "dice_spleen" in ft["test"]["per_class"]
    lines = closing_lines(summary, tmp_path / "summary.json")
    assert lines[0].startswith("demo: pre-training quality gate passed")
    assert any(line.startswith("demo: pre-trained weights shipped with the package") for line in lines)


def test_the_demo_fine_tunes_with_the_recipe_as_published(tmp_path, monkeypatch):
    """The demo's fine-tuning from the packaged weights is `finetune/liver_sample` with seed 0 and only its init
    changed, so the figures its docstring and docs/finetuning.md give for that recipe are the demo's."""
    from flax import traverse_util

    import genesis_jax.train.finetune as finetune_module
    from genesis_jax.cli.demo import DEMO_CUBE, PACKAGED_WEIGHTS, _finetune
    from genesis_jax.config_loader import load_config
    from genesis_jax.models import packaged

    seen = {}
    monkeypatch.setattr(finetune_module, "finetune", lambda config, workdir: seen.setdefault("config", config) and {})
    model_config = packaged.record(PACKAGED_WEIGHTS)["model_config"]
    _finetune("W", model_config, DEMO_CUBE, tmp_path, None, True, None, lambda _: None)

    demo, recipe = (traverse_util.flatten_dict(c.to_dict(), sep=".")
                    for c in (seen["config"], load_config("finetune/liver_sample")))
    differing = {k for k in demo.keys() | recipe.keys() if demo.get(k) != recipe.get(k)}
    assert differing == {"init.checkpoint", "logging.tensorboard"}, {k: (demo.get(k), recipe.get(k)) for k in differing}
    assert demo["init.checkpoint"] == "W" and demo["seed"] == 0
