"""`genesis-jax predict`: label maps on the input's exact grid for NIfTI (non-canonical, anisotropic), MetaImage and
DICOM, the class set of a binary and a multi-class head, bad files named and skipped, atomic writes and reruns that
skip finished cases. Tiny networks (base width 4, depth 2) on ~24^3 volumes."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import nibabel as nib
import numpy as np
import pytest

from genesis_jax.cli import main
from genesis_jax.data.metaimage import read_metaimage, write_metaimage
from genesis_jax.data.readers import read_volume
from genesis_jax.evaluation.predict import InferenceSettings, Predictor, find_cases, inference_settings
from genesis_jax.models import build_model
from genesis_jax.models.weights import save_weights
from tests.data.helpers import write_nifti
from tests.data.test_readers import _write_dicom_series

SETTINGS = InferenceSettings(window=(16, 16, 8), target_spacing=(2.0, 2.0, 3.0), overlap=0.5, batch_size=4)


def _weights(path, num_classes: int, *, in_channels: int = 1, labels=None, source="genesis_jax finetune",
             name="genesis_unet"):
    config = dict(name=name, variant="keras", base_width=4, depth=2, in_channels=in_channels,
                  num_classes=num_classes, head_activation="sigmoid" if num_classes == 1 else "softmax")
    model = build_model(config)
    sample = jnp.asarray(np.clip((_ct((16, 16, 8)) + 1000.0) / 2000.0, 0, 1))[None, ..., None]
    sample = jnp.repeat(sample, in_channels, axis=-1)
    variables = jax.jit(model.init)(jax.random.key(0), sample)
    params = jax.tree.map(np.asarray, variables["params"])
    # A head whose classes split a CT-like scan: random directions, each bias at its logit's median on a sample,
    # so a binary head gives both 0 and 1 and a softmax head each class somewhere (not a trained model).
    features = np.asarray(model.apply(variables, sample, output="features")["decoder"]).reshape(-1, 8)
    kernel = np.random.default_rng(1).normal(0.0, 1.0, (8, num_classes)).astype(np.float32)
    logits = features @ kernel
    params["head"]["kernel"] = kernel.reshape(params["head"]["kernel"].shape)
    params["head"]["bias"] = -np.median(logits, axis=0).astype(np.float32)
    metadata = {"source": source, "inference": SETTINGS.as_dict()}
    if labels:
        metadata["labels"] = labels
    return save_weights(path, {"params": params, "batch_stats": jax.tree.map(np.asarray, variables["batch_stats"])},
                        config, metadata)


@pytest.fixture(scope="module")
def binary_weights(tmp_path_factory):
    return _weights(tmp_path_factory.mktemp("w") / "binary", 1)


@pytest.fixture(scope="module")
def multiclass_weights(tmp_path_factory):
    return _weights(tmp_path_factory.mktemp("w") / "multi", 3, labels={"background": 0, "liver": 1, "spleen": 2})


def _ct(shape, seed=0):
    """A blobby CT-like volume in HU (air, soft tissue, bright spots) so the tiny heads give several classes."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    r = np.sqrt((grid ** 2).sum(0))
    hu = np.where(r < 0.8, 40.0, -1000.0) + np.where(r < 0.35, 600.0, 0.0) + rng.normal(0, 20, shape)
    return hu.astype(np.float32)


def _oblique_affine(spacing=(1.0, 1.5, 2.5)):
    """A non-canonical (LPI-like, axes permuted) anisotropic affine with an off-origin translation."""
    affine = np.zeros((4, 4))
    affine[0, 1] = -spacing[1]  # voxel axis 1 runs right-to-left
    affine[1, 0] = spacing[0]
    affine[2, 2] = -spacing[2]  # slices run superior-to-inferior
    affine[:3, 3] = [12.5, -30.25, 101.0]
    affine[3, 3] = 1.0
    return affine


def test_nifti_non_canonical_anisotropic_keeps_the_grid_and_matches_canonical(tmp_path, binary_weights, capsys):
    hu = _ct((22, 26, 12))
    affine = _oblique_affine()
    src = write_nifti(tmp_path / "in" / "case7_0000.nii.gz", hu, affine)
    # The same scan stored in canonical order: its labels must be those of the first one, reoriented.
    canonical = nib.as_closest_canonical(nib.load(str(src)))
    write_nifti(tmp_path / "canon" / "case7_0000.nii.gz", np.asarray(canonical.dataobj), canonical.affine)

    assert main(["predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--weights",
                 str(binary_weights), "--save-probabilities", "--no-progress"]) == 0
    out = nib.load(str(tmp_path / "out" / "case7.nii.gz"))
    assert out.shape == hu.shape and out.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(out.affine, nib.load(str(src)).affine)
    labels = np.asarray(out.dataobj)
    assert set(np.unique(labels)) == {0, 1}
    probs = nib.load(str(tmp_path / "out" / "case7_probabilities.nii.gz"))
    assert probs.shape == hu.shape and probs.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(probs.affine, out.affine)
    p = np.asarray(probs.get_fdata())
    assert 0.0 <= p.min() and p.max() <= 1.0
    printed = capsys.readouterr().out
    assert "case7: 22x26x12 voxels" in printed and "voxels/s" in printed and "1 written" in printed

    assert main(["predict", "-i", str(tmp_path / "canon"), "-o", str(tmp_path / "out_canon"), "--weights",
                 str(binary_weights), "--no-progress"]) == 0
    canon_out = nib.load(str(tmp_path / "out_canon" / "case7.nii.gz"))
    reoriented = np.asarray(nib.as_closest_canonical(out).dataobj)
    np.testing.assert_array_equal(reoriented, np.asarray(canon_out.dataobj))


def test_metaimage_keeps_origin_spacing_direction(tmp_path, multiclass_weights):
    hu = _ct((20, 24, 10), seed=1).astype(np.int16)
    direction = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    src = write_metaimage(tmp_path / "in" / "scan.mha", hu, spacing=(1.25, 0.7, 3.5),
                          origin=(-101.3, 57.125, -12.0), direction=direction)
    src_mhd = write_metaimage(tmp_path / "in" / "other.mhd", hu, spacing=(1.25, 0.7, 3.5))
    assert main(["predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--weights",
                 str(multiclass_weights), "--no-progress"]) == 0
    for name, source in (("scan.mha", src), ("other.mhd", src_mhd)):
        labels, out_affine = read_metaimage(tmp_path / "out" / name)
        array, in_affine = read_metaimage(source)
        assert labels.shape == array.shape and labels.dtype == np.uint8
        np.testing.assert_allclose(out_affine, in_affine, rtol=0, atol=1e-9)
        assert set(np.unique(labels)) <= {0, 1, 2} and len(np.unique(labels)) >= 2
    assert (tmp_path / "out" / "other.raw").is_file()
    assert not [p for p in (tmp_path / "out").iterdir() if ".tmp-" in p.name]


def test_dicom_series_gives_nifti_on_the_series_grid(tmp_path, multiclass_weights, capsys):
    hu = _ct((20, 18, 9), seed=2)
    _write_dicom_series(tmp_path / "in" / "patient1", hu, spacing=(0.8, 0.9, 2.5))
    assert main(["predict", "-i", str(tmp_path / "in" / "patient1"), "-o", str(tmp_path / "out"), "--weights",
                 str(multiclass_weights), "--no-progress"]) == 0
    out = nib.load(str(tmp_path / "out" / "patient1.nii.gz"))
    series = read_volume(tmp_path / "in" / "patient1", canonical=False)
    assert out.shape == series.shape
    np.testing.assert_allclose(out.affine, series.affine, atol=1e-6)
    labels = set(np.unique(np.asarray(out.dataobj)))
    assert labels <= {0, 1, 2} and len(labels) >= 2


def test_multiclass_class_names_and_ids(tmp_path, multiclass_weights, capsys):
    write_nifti(tmp_path / "in" / "a_0000.nii.gz", _ct((24, 24, 16), seed=3), np.diag([1.0, 1.0, 2.0, 1.0]))
    assert main(["predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--weights",
                 str(multiclass_weights), "--no-progress", "--mirror", "--save-probabilities"]) == 0
    labels = np.asarray(nib.load(str(tmp_path / "out" / "a.nii.gz")).dataobj)
    assert set(np.unique(labels)) == {0, 1, 2}
    probs = nib.load(str(tmp_path / "out" / "a_probabilities.nii.gz"))
    assert probs.shape == (24, 24, 16, 3)
    np.testing.assert_allclose(probs.get_fdata().sum(-1), 1.0, atol=3 * 0.5 / 255 + 1e-6)
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("a: "))
    assert "background: " in line and "liver: " in line and "spleen: " in line


def test_bad_files_named_and_skipped_rerun_skips_done(tmp_path, binary_weights, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_nifti(inp / "good_0000.nii.gz", _ct((20, 20, 10)), np.diag([1.5, 1.5, 3.0, 1.0]))
    (inp / "broken_0000.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    write_nifti(inp / "two_0000.nii.gz", _ct((20, 20, 10)))
    write_nifti(inp / "two_0001.nii.gz", _ct((20, 20, 10)))  # two channels for a one-channel network
    (out / ".good.nii.gz.tmp-killed.nii.gz").parent.mkdir(parents=True)
    (out / ".good.nii.gz.tmp-killed.nii.gz").write_bytes(b"partial")  # left by a killed run
    assert main(["predict", "-i", str(inp), "-o", str(out), "--weights", str(binary_weights), "--no-progress"]) == 1
    captured = capsys.readouterr()
    errors = [l for l in captured.err.splitlines() if "error" in l]
    assert any("broken_0000.nii.gz" in l and "skipped" in l for l in errors)
    assert any("two_0000.nii.gz" in l and "2 channel file(s)" in l for l in errors)
    assert "1 written, 0 already done (--overwrite to redo), 2 failed" in captured.out
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".genesis_jax")) == ["good.nii.gz"]
    first = (out / "good.nii.gz").stat().st_mtime_ns

    assert main(["predict", "-i", str(inp / "good_0000.nii.gz"), "-o", str(out), "--weights",
                 str(binary_weights), "--no-progress"]) == 0
    assert "0 written, 1 already done" in capsys.readouterr().out
    assert (out / "good.nii.gz").stat().st_mtime_ns == first


def test_a_failed_write_leaves_no_output(tmp_path, binary_weights, monkeypatch):
    write_nifti(tmp_path / "in" / "c_0000.nii.gz", _ct((20, 20, 10)))

    def dies(image, filename):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError(28, "No space left on device", filename)

    monkeypatch.setattr(nib, "save", dies)
    with pytest.raises(OSError):
        main(["--debug", "predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--weights",
              str(binary_weights), "--no-progress"])
    assert [p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".genesis_jax")] == []


@pytest.mark.parametrize("kind, message", [("classifier", "classification weights (genesis_classifier)"),
                                           ("pretrain", "restoration pre-training weights")])
def test_weights_that_cannot_segment_are_one_line(tmp_path, kind, message, capsys):
    if kind == "classifier":
        from genesis_jax.models.weights import save_weights as save

        save(tmp_path / "w", {"params": {}}, {"name": "genesis_classifier", "num_classes": 1}, {})
    else:
        _weights(tmp_path / "w", 1, source="genesis_jax pretrain")
    write_nifti(tmp_path / "in" / "x.nii.gz", _ct((20, 20, 10)))
    assert main(["predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--weights",
                 str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "w") in err[0] and message in err[0]
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_find_cases_groups_nnunet_channels_and_series(tmp_path):
    for name in ("b_0001.nii.gz", "b_0000.nii.gz", "plain.nii", "plain.mha", "sub/c_0000.mha", "notes.txt",
                 "out/b.nii.gz"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    _write_dicom_series(tmp_path / "series", _ct((6, 5, 4)))
    cases = {(c.name, c.ending): c for c in find_cases(tmp_path, exclude=tmp_path / "out")}
    assert sorted(cases) == [("b", ".nii.gz"), ("plain", ".mha"), ("plain", ".nii"), ("series", ".nii.gz"),
                             ("sub/c", ".mha")]
    assert [p.name for p in cases["b", ".nii.gz"].channels] == ["b_0000.nii.gz", "b_0001.nii.gz"]
    assert cases["b", ".nii.gz"].channel_ids == [0, 1]


def test_a_gap_in_the_channels_is_named(tmp_path, binary_weights, capsys):
    write_nifti(tmp_path / "in" / "g_0001.nii.gz", _ct((20, 20, 10)))
    assert main(["predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "in" / "out"), "--weights",
                 str(binary_weights), "--no-progress"]) == 1
    assert "g_0001.nii.gz: case g has channels _0001; expected _0000" in capsys.readouterr().err


def test_settings_fall_back_to_the_runs_config(tmp_path):
    import json

    workdir = tmp_path / "run"
    (workdir / "weights").mkdir(parents=True)
    (workdir / "config.json").write_text(json.dumps({
        "input_shape": [32, 32, 16, 1], "data": {"target_spacing": [1.5, 1.5, 1.5], "modality": "ct",
                                                "hu_min": -160.0, "hu_max": 240.0},
        "eval": {"window": [32, 32, 16], "overlap": 0.25, "blend": "gaussian", "batch_size": 2}}))
    settings, source = inference_settings(workdir / "weights", {"source": "genesis_jax finetune"})
    assert source == str(workdir / "config.json")
    assert settings.target_spacing == (1.5, 1.5, 1.5) and settings.window == (32, 32, 16)
    assert (settings.hu_min, settings.overlap, settings.batch_size) == (-160.0, 0.25, 2)
    assert InferenceSettings.from_dict(settings.as_dict()) == settings
    assert inference_settings(tmp_path / "elsewhere", {})[1].startswith("defaults")


def test_predict_reads_a_scan_as_evaluate_does(tmp_path):
    """The same weights on the same phantom: predict (from HU on disk, its recorded settings) gives the probabilities
    `evaluate` computes from the prepared test volume, so preprocessing and windowing match training's."""
    from genesis_jax.config_loader import load_config
    from genesis_jax.data.task_data import load_task_data
    from genesis_jax.evaluation.test_set import evaluate_test_set

    config = load_config("finetune/lcs:tiny")
    config.model.base_width = 4
    model = build_model(config.model)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, *config.input_shape)))
    variables = jax.tree.map(np.asarray, variables)
    data = load_task_data(config, parts=("test",))
    volume = data.test_volumes[0]
    expected = evaluate_test_set(config, config.model.to_dict(), variables, data, keep_probabilities=True)
    expected = expected["probabilities"][volume.name]
    settings = InferenceSettings.from_config(config.to_dict())  # what a fine-tuning export records
    save_weights(tmp_path / "w", variables, config.model.to_dict(),
                 {"source": "genesis_jax finetune", "inference": settings.as_dict()})
    write_nifti(tmp_path / "in" / "phantom.nii.gz", volume.image * 2000.0 - 1000.0, volume.affine)
    assert main(["predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--weights",
                 str(tmp_path / "w"), "--save-probabilities", "--no-progress"]) == 0
    got = nib.load(str(tmp_path / "out" / "phantom_probabilities.nii.gz")).get_fdata()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=0.5 / 255 + 1e-4)


def test_fine_tuning_configs_record_their_spacing():
    from genesis_jax.config_loader import load_config

    settings = InferenceSettings.from_config(load_config("finetune/liver_sample").to_dict())
    assert settings.target_spacing == (5.0, 5.0, 3.0) and settings.window == (32, 32, 16)
    assert settings.largest_component  # the liver demo's per-class rule reaches predict
    assert InferenceSettings.from_config(load_config("finetune/liver_sample:binary").to_dict()).target_spacing == \
        (3.0, 3.0, 3.0)
    assert InferenceSettings.from_config(load_config("finetune/lcs:tiny").to_dict()).window == (16, 16, 8)


def test_a_two_channel_case_is_predicted_on_its_grid(tmp_path):
    weights = _weights(tmp_path / "w2", 1, in_channels=2)
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    write_nifti(tmp_path / "in" / "mr_0001.nii.gz", _ct((20, 20, 10), seed=5), affine)
    write_nifti(tmp_path / "in" / "mr_0000.nii.gz", _ct((20, 20, 10), seed=6), affine)
    assert main(["predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--weights", str(weights),
                 "--no-progress"]) == 0
    out = nib.load(str(tmp_path / "out" / "mr.nii.gz"))
    assert out.shape == (20, 20, 10) and set(np.unique(np.asarray(out.dataobj))) <= {0, 1}
    np.testing.assert_array_equal(out.affine, affine)


def test_a_kill_before_the_rename_leaves_no_output_and_the_rerun_finishes(tmp_path, binary_weights, capsys):
    import subprocess
    import sys
    from pathlib import Path

    for name in ("a", "b"):
        write_nifti(tmp_path / "in" / f"{name}_0000.nii.gz", _ct((20, 20, 10)), np.diag([1.5, 1.5, 3.0, 1.0]))
    argv = ["predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--weights", str(binary_weights),
            "--no-progress"]
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "GENESIS_JAX_CRASH_AT": "atomic_file@2", "PYTHONPATH": str(repo)}
    killed = subprocess.run([sys.executable, "-m", "genesis_jax.cli", *argv], env=env, cwd=repo,
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    left = sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".genesis_jax"))
    assert left[1:] == ["a.nii.gz"] and left[0].startswith(".b.nii.gz.tmp-")  # b written, not in place
    assert main(argv) == 0
    assert "1 written, 1 already done" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".genesis_jax")) == [
        "a.nii.gz", "b.nii.gz"]
