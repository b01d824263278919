"""Active-learning pools: the .npz format's checks (raw HU refused by name), a pool cut from a prepared dataset
folder, and a work directory that keeps its pool settings so later rounds repeat no pool flag."""

import json

import numpy as np
import pytest

from genesis_jax.active.pool import load_pool
from genesis_jax.cli import main
from tests.data.dataset_folder import write_nnunet_dataset


@pytest.mark.parametrize("arrays, message", [
    (dict(ids=np.array(["a", "b"]), contexts=np.full((2, 6, 6, 6), -1000.0)), "raw HU or scanner values"),
    (dict(ids=np.array(["a", "b"]), contexts=np.full((2, 6, 6, 6), np.nan)), "'contexts' hold NaN"),
    (dict(ids=np.array(["a", "b"]), contexts=np.zeros((2, 6, 6, 6), np.complex64)), "must hold real numbers"),
    (dict(ids=np.array([["a", "b"]]), contexts=np.zeros((1, 6, 6, 6))), "'ids' must be a 1-D array"),
    (dict(ids=np.array(["a", "b"]), contexts=np.zeros((2, 6, 6, 6)), labels=np.array([0.5, 1.0])),
     "'labels' must be a 1-D array of integers"),
])
def test_a_bad_npz_pool_is_one_line_naming_the_key(tmp_path, arrays, message):
    np.savez(tmp_path / "pool.npz", **arrays)
    with pytest.raises(ValueError, match=message) as err:
        load_pool(tmp_path / "pool.npz")
    assert str(tmp_path / "pool.npz") in str(err.value) and "\n" not in str(err.value)


def test_a_pool_from_a_dataset_folder_and_rounds_without_pool_flags(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GENESIS_JAX_CACHE", str(tmp_path / "cache"))
    folder = write_nnunet_dataset(tmp_path / "Dataset005_P", num_training=3, num_test=0)
    assert main(["data", "prepare", f"--dataset={folder}"]) == 0
    workdir = tmp_path / "al"
    select = ["al", "select", "--config=active/acft:tiny", f"--workdir={workdir}", "--budget=4"]
    assert main([*select, f"--dataset={folder}", "--label=spleen", "--config.pool.n=40"]) == 0
    stored = json.loads((workdir / "config.json").read_text())["pool"]
    assert stored["kind"] == "dataset" and stored["label"] == "spleen" and stored["n"] == 40
    ids = json.loads((workdir / "pool_ids.json").read_text())
    assert len(ids) == 40 and all("@" in i for i in ids)
    capsys.readouterr()
    assert main(select) == 0, capsys.readouterr().err  # no --dataset, no pool override: the stored pool
