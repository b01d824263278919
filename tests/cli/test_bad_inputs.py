"""Every bad input of issue 16 through the `genesis-jax` command: a non-zero exit, exactly one line on stderr that
names the file or the field, and no Python traceback (``--debug`` shows it). The table runs in-process
(``genesis_jax.cli.main``); two rows also run the installed entry point in a subprocess.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from genesis_jax.cli import main

PRETRAIN = "--config=pretrain/genesis_chest_ct:tiny"
FINETUNE = "--config=finetune/lcs:tiny"
CUBES = "--config=data/genesis_cubes:tiny"
ACTIVE = "--config=active/acft:tiny"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The bad files, made once: volumes, weights, annotation files, work directories."""
    from genesis_jax.active import state as st
    from genesis_jax.models.weights import save_weights

    root = tmp_path_factory.mktemp("bad_inputs")
    f: dict[str, Path] = {"root": root}
    small = root / "small"
    small.mkdir()
    nib.save(nib.Nifti1Image(np.arange(20 * 20 * 10, dtype=np.int16).reshape(20, 20, 10), np.eye(4)),
             small / "small_scan.nii.gz")
    f["small"] = small
    lits = root / "lits"
    lits.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), np.eye(4)), lits / "volume-abc.nii.gz")
    f["lits"] = lits
    lying = root / "lying"
    lying.mkdir()
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape((1024, 1024, 512))  # 1 GiB of voxels claimed by a 400-byte file
    (lying / "liar_scan.nii.gz").write_bytes(gzip.compress(header.binaryblock + bytes(48)))
    f["lying"] = lying

    (root / "empty.pt").write_bytes(b"")
    (root / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    f["file"] = root / "a_plain_file"
    f["file"].write_text("not a directory")

    seg = save_weights(root / "seg_weights", {"params": {"w": np.zeros(2, np.float32)}},
                       {"name": "genesis_unet", "variant": "keras", "base_width": 2, "depth": 2, "num_classes": 1})
    f["seg_weights"] = seg
    pre = save_weights(root / "pretrain_weights", {"params": {"w": np.zeros(2, np.float32)}},
                       {"name": "genesis_unet", "variant": "pytorch", "base_width": 2, "depth": 2, "num_classes": 1},
                       {"source": "genesis_jax pretrain"})
    f["pretrain_weights"] = pre
    broken = save_weights(root / "broken_weights", {"params": {"w": np.zeros(2, np.float32)}}, {"name": "x"})
    (broken / "model_config.json").write_text("{not json")
    f["broken_weights"] = broken

    al = root / "al"
    al.mkdir()
    st.save_state(al, st.LoopState(model="models/round_0000", initial_model="models/round_0000",
                                   class_names=["negative", "positive"]))
    st.atomic_write_json(al / st.POOL_IDS_FILE, ["syn-0000"])
    st.atomic_write_text(al / st.CONFIG_FILE, json.dumps({"model": {"name": "genesis_classifier", "base_width": 4}}))
    f["al"] = al
    (root / "labels.csv").write_bytes("id,label\nsyn-0000,n\xe9gatif\n".encode("latin-1"))
    return f


# (id, argv with {name} placeholders for files, text the one stderr line must contain)
ROWS = [
    ("cube_shape_zero", ["data", "prepare", CUBES, "--config.data.cubes.cube_shape=(0,32,16)"], "cube_shape"),
    ("cube_shape_malformed", ["data", "prepare", CUBES, "--config.data.cubes.cube_shape=abc"], "cube_shape"),
    ("num_scans_negative", ["data", "prepare", CUBES, "--config.data.synthetic.num_scans=-1"], "num_scans"),
    ("modality_unknown", ["data", "prepare", CUBES, "--config.data.modality=xray"], "modality"),
    ("global_batch_zero", ["pretrain", PRETRAIN, "--workdir={root}/w", "--config.global_batch_size=0"],
     "global_batch_size"),
    ("max_steps_negative", ["pretrain", PRETRAIN, "--workdir={root}/w", "--config.max_steps=-5"], "max_steps"),
    ("depth_zero", ["pretrain", PRETRAIN, "--workdir={root}/w", "--config.model.depth=0"], "model.depth"),
    ("optimizer_unknown", ["pretrain", PRETRAIN, "--workdir={root}/w", "--config.optimizer.name=rmsprop"],
     "optimizer.name"),
    ("field_unknown", ["pretrain", PRETRAIN, "--workdir={root}/w", "--config.no_such_field=1"], "no_such_field"),
    ("input_not_divisible", ["finetune", FINETUNE, "--workdir={root}/w", "--config.input_shape=(15,16,8,1)"],
     "config.input_shape"),
    ("batch_negative", ["finetune", FINETUNE, "--workdir={root}/w", "--config.global_batch_size=-2"],
     "global_batch_size"),
    ("variant_unknown", ["finetune", "--config=finetune/lcs:huge", "--workdir={root}/w"], "huge"),
    ("kind_finetune_for_pretrain", ["pretrain", FINETUNE, "--workdir={root}/w"], "fine-tuning config"),
    ("kind_active_for_finetune", ["finetune", ACTIVE, "--workdir={root}/w"], "active-learning config"),
    ("kind_pretrain_for_al", ["al", "step", PRETRAIN, "--workdir={root}/w"], "pre-training config"),
    ("too_small_volume", ["data", "prepare", "--config=data/genesis_cubes:directory",
                          "--config.data.manual_dir={small}", "--config.data.on_error=raise",
                          "--config.data.data_dir={root}/tfds"], "small_scan.nii.gz"),
    ("lying_nifti_header", ["data", "prepare", "--config=data/genesis_cubes:directory",
                            "--config.data.manual_dir={lying}", "--config.data.on_error=raise",
                            "--config.data.data_dir={root}/tfds"], "liar_scan.nii.gz"),
    ("lits_stray_name", ["data", "prepare", "--config=data/downstream:lits",
                         "--config.data.manual_dir={lits}", "--config.data.data_dir={root}/tfds"], "lits"),
    ("empty_pt", ["convert", "--from={root}/empty.pt", "--to={root}/c1"], "empty.pt"),
    ("random_bytes_pt", ["convert", "--from={root}/random.pt", "--to={root}/c2"], "random.pt"),
    ("label_csv_not_utf8", ["al", "label", "--workdir={al}", "--file={root}/labels.csv"], "labels.csv"),
    ("al_width_mismatch", ["al", "step", ACTIVE, "--workdir={al}"], "config.model.base_width"),
    ("al_workdir_not_writable", ["al", "step", ACTIVE, "--workdir={file}/al"], "a_plain_file"),
    ("pretrain_workdir_not_writable", ["pretrain", PRETRAIN, "--workdir={file}/w"], "a_plain_file"),
    ("evaluate_missing_weights", ["evaluate", FINETUNE, "--weights={root}/nowhere", "--out={root}/e"], "nowhere"),
    ("evaluate_broken_model_config", ["evaluate", FINETUNE, "--weights={broken_weights}", "--out={root}/e"],
     "model_config.json"),
    ("evaluate_segmentation_as_classifier", ["evaluate", "--config=finetune/ncc:tiny",
                                             "--weights={seg_weights}", "--out={root}/e"], "seg_weights"),
    ("evaluate_pretrain_weights_as_segmenter", ["evaluate", FINETUNE, "--weights={pretrain_weights}",
                                                "--out={root}/e"], "pretrain_weights"),
]


def _argv(argv: list[str], files: dict[str, Path]) -> list[str]:
    return [a.format(**{k: str(v) for k, v in files.items()}) for a in argv]


def _assert_one_line(rc: int, err: str, must_contain: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc != 0
    assert "Traceback" not in err
    assert len(lines) == 1, lines
    assert must_contain in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("argv,must_contain", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_gives_one_line(argv, must_contain, files, capsys):
    try:
        rc = main(_argv(argv, files))
    except SystemExit as exc:  # argparse
        rc = exc.code
    line = _assert_one_line(rc, capsys.readouterr().err, must_contain)
    assert line.startswith(f"genesis-jax {argv[0]}")
    if "random.pt" in must_contain:  # random bytes are not "pickled Python objects"
        assert "pickled" not in line


def test_debug_shows_the_traceback(files):
    from genesis_jax.config_loader import ConfigError

    with pytest.raises(ConfigError, match="max_steps"):
        main(["--debug", "pretrain", PRETRAIN, f"--workdir={files['root']}/w", "--config.max_steps=-5"])
    with pytest.raises(ConfigError, match="max_steps"):  # also after the command
        main(["pretrain", PRETRAIN, f"--workdir={files['root']}/w", "--config.max_steps=-5", "--debug"])


@pytest.mark.parametrize("name", ["depth_zero", "evaluate_missing_weights"])
def test_entry_point_behaves_the_same(name, files):
    row = next(r for r in ROWS if r[0] == name)
    proc = subprocess.run([sys.executable, "-m", "genesis_jax.cli", *_argv(row[1], files)], capture_output=True, check=False,
                          text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    _assert_one_line(proc.returncode, proc.stderr, row[2])


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0555 directory; CI runs unprivileged")
@pytest.mark.parametrize("argv", [["pretrain", PRETRAIN], ["al", "step", ACTIVE]], ids=["pretrain", "al_step"])
def test_read_only_workdir_fails_at_once(argv, tmp_path, capsys):
    workdir = tmp_path / "read_only"
    workdir.mkdir()
    workdir.chmod(0o555)
    try:
        rc = main([*argv, f"--workdir={workdir}"])
    finally:
        workdir.chmod(0o755)
    assert "cannot write to the work directory" in _assert_one_line(rc, capsys.readouterr().err, str(workdir))
