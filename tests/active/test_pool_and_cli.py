"""Candidate pools (synthetic, organ cubes of a CT, .npz files) and the `genesis-jax al` command's error paths."""

import numpy as np
import pytest

from genesis_jax.active import CandidatePool, load_pool, save_pool, synthetic_pool
from genesis_jax.active import state as st
from genesis_jax.active.pool import organ_cube_pools
from genesis_jax.cli import main
from genesis_jax.data.patches import crop_centered
from genesis_jax.data.phantom import synthetic_ct


def test_synthetic_pool_is_deterministic_with_the_requested_balance():
    a, b = synthetic_pool(300, 12, 0.2, 0.3, seed=4), synthetic_pool(300, 12, 0.2, 0.3, seed=4)
    np.testing.assert_array_equal(a.contexts, b.contexts)
    assert a.contexts.shape == (300, 12, 12, 12, 1) and 0.12 < a.labels.mean() < 0.28
    # positives are brighter at the centre than easy negatives on average
    centre = a.contexts[:, 4:8, 4:8, 4:8, 0].mean(axis=(1, 2, 3))
    assert centre[a.labels == 1].mean() > centre[a.labels == 0].mean()


def test_organ_cube_pools_are_disjoint_and_labelled_by_the_central_box():
    ct = synthetic_ct((64, 64, 64), seed=1)
    liver = ct["label"] == 1
    image01 = np.clip((ct["image"] + 160) / 400, 0, 1)
    pool, test = organ_cube_pools(image01, liver, ct["image"] > -500, 40, 20, 12, 8, 0.25, seed=0)
    assert len(pool) == 40 and len(test) == 20 and pool.labels.sum() == 10 and test.labels.sum() == 5
    assert not set(pool.ids.tolist()) & set(test.ids.tolist())
    for p in (pool, test):
        for cid, y in zip(p.ids[:10], p.labels[:10]):
            centre = [int(v) for v in cid.split("-")[-1].split("_")]
            box = crop_centered(liver.astype(np.float32), centre, (8, 8, 8))  # zero beyond the volume
            assert (box.mean() >= 0.5) == bool(y)


def test_npz_pools_round_trip_and_bad_files_are_named(tmp_path):
    pool = CandidatePool(np.array(["a", "b"]), np.zeros((2, 6, 6, 6, 1), np.float32), np.array([0, 1]))
    back = load_pool(save_pool(tmp_path / "p.npz", pool))
    assert back.ids.tolist() == ["a", "b"] and back.labels.tolist() == [0, 1]
    np.savez(tmp_path / "bad.npz", ids=np.array(["a"]))
    with pytest.raises(ValueError, match=r"bad.npz: the pool has no 'contexts'"):
        load_pool(tmp_path / "bad.npz")
    np.savez(tmp_path / "dup.npz", ids=np.array(["a", "a"]), contexts=np.zeros((2, 6, 6, 6)))
    with pytest.raises(ValueError, match=r"dup.npz: candidate ids must be unique"):
        load_pool(tmp_path / "dup.npz")


def test_cli_label_rejects_unknown_ids_and_needs_a_workdir(tmp_path, capsys):
    wd = tmp_path / "wd"
    st.atomic_write_json(wd / st.POOL_IDS_FILE, ["a", "b"])
    st.save_state(wd, st.LoopState())
    (tmp_path / "ann.csv").write_text("id,label\na,1\nghost,0\n")
    assert main(["al", "label", f"--workdir={wd}", f"--file={tmp_path / 'ann.csv'}"]) == 1
    assert "not in the pool: 'ghost'" in capsys.readouterr().err
    (tmp_path / "ok.csv").write_text("id,label\na,1\n")
    assert main(["al", "label", f"--workdir={wd}", f"--file={tmp_path / 'ok.csv'}"]) == 0
    assert main(["al", "label", f"--workdir={wd}", f"--file={tmp_path / 'ok.csv'}"]) == 0
    assert "0 added, 0 changed, 1 already present" in capsys.readouterr().out
    assert main(["al", "status", f"--workdir={wd}"]) == 0
    assert main(["al", "status", f"--workdir={tmp_path / 'nowhere'}"]) == 1
    assert "no active-learning state here" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["al", "label", f"--file={tmp_path / 'ok.csv'}"])
