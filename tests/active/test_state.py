"""The human-in-the-loop state: atomic writes, idempotent imports, unknown ids, crash safety of a whole round."""

import csv
import json
import os

import numpy as np
import pytest

from genesis_jax.active import session
from genesis_jax.active import state as st
from genesis_jax.config_loader import load_config

TINY = [
    "--config.pool.n=40", "--config.pool.context_size=6", "--config.patches.patch_shape=(4, 4, 4)",
    "--config.patches.box_shape=(4, 4, 4)", "--config.model.depth=1", "--config.model.hidden=8",
    "--config.learner.batch_size=8", "--config.learner.calibration_size=16", "--config.learner.min_steps=5",
    "--config.learner.max_steps=10", "--config.learner.bucket_min=16", "--config.learner.chunk_size=64",
    "--config.learner.device_batch=16",
]


def _workdir(tmp_path, ids=("a", "b", "c"), labels=None):
    wd = tmp_path / "wd"
    wd.mkdir()
    st.atomic_write_json(wd / st.POOL_IDS_FILE, list(ids))
    st.save_state(wd, st.LoopState(model="models/round_0000", initial_model="models/round_0000",
                                   labels=dict(labels or {}), label_round={k: 0 for k in (labels or {})}))
    return wd


def _csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "score", "label"])
        w.writeheader()
        w.writerows({"id": i, "score": 0.5, "label": y} for i, y in rows)
    return path


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = st.atomic_write_text(tmp_path / "f.json", "old")

    def crash(src, dst):
        raise KeyboardInterrupt("killed before the rename")

    monkeypatch.setattr(os, "replace", crash)  # the writer (genesis_jax.workdir) renames with os.replace
    with pytest.raises(KeyboardInterrupt):
        st.atomic_write_text(path, "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["f.json"]  # no temporary left behind


def test_import_is_idempotent_and_accepts_indices_names_and_blanks(tmp_path):
    wd = _workdir(tmp_path)
    ann = _csv(tmp_path / "ann.csv", [("a", "1"), ("b", "negative"), ("c", "")])
    first = st.import_annotations(wd, ann)
    assert (first.added, first.unchanged) == (2, 0)
    before = (wd / st.STATE_FILE).read_bytes()
    again = st.import_annotations(wd, ann)
    assert (again.added, again.unchanged, again.changed) == (0, 2, 0)
    assert (wd / st.STATE_FILE).read_bytes() == before
    state = st.load_state(wd)
    assert state.labels == {"a": 1, "b": 0} and state.new_ids() == ["a", "b"]
    (tmp_path / "ann.json").write_text(json.dumps([{"id": "c", "label": 1}]))
    assert st.import_annotations(wd, tmp_path / "ann.json").added == 1


def test_unknown_ids_and_conflicts_are_rejected_with_nothing_imported(tmp_path):
    wd = _workdir(tmp_path, labels={"a": 1})
    before = (wd / st.STATE_FILE).read_bytes()
    with pytest.raises(st.StateError, match=r"not in the pool: 'zz'.*nothing was imported"):
        st.import_annotations(wd, _csv(tmp_path / "x.csv", [("b", "1"), ("zz", "0")]))
    with pytest.raises(st.StateError, match=r"different label: 'a' \(1 -> 0\)"):
        st.import_annotations(wd, _csv(tmp_path / "y.csv", [("a", "0"), ("b", "1")]))
    assert (wd / st.STATE_FILE).read_bytes() == before
    assert st.import_annotations(wd, tmp_path / "y.csv", overwrite=True).changed == 1
    with pytest.raises(st.StateError, match=r"z.csv, line 2: label 'maybe'"):
        st.import_annotations(wd, _csv(tmp_path / "z.csv", [("a", "maybe")]))
    with pytest.raises(st.StateError, match="needs the columns 'id' and 'label'"):
        (tmp_path / "w.csv").write_text("name,label\na,1\n")
        st.import_annotations(wd, tmp_path / "w.csv")


def test_a_crash_while_importing_loses_and_duplicates_nothing(tmp_path, monkeypatch):
    wd = _workdir(tmp_path)
    ann = _csv(tmp_path / "ann.csv", [("a", "1"), ("b", "0")])
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        st.import_annotations(wd, ann)
    assert st.load_state(wd).labels == {}
    monkeypatch.setattr(os, "replace", real_replace)
    st.import_annotations(wd, ann)
    st.import_annotations(wd, ann)
    assert st.load_state(wd).labels == {"a": 1, "b": 0}


def annotate_as_the_oracle(selection_csv, pool, path):
    """The selection CSV with its 'label' column filled in from the pool's labels, written to ``path``; its rows."""
    rows = list(csv.DictReader(open(selection_csv)))
    oracle = dict(zip(pool.ids.tolist(), pool.labels))
    for r in rows:
        r["label"] = int(oracle[r["id"]])
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows


def test_select_label_step_loop_survives_a_crash_in_step(tmp_path, monkeypatch):
    config = load_config("active/acft:tiny", TINY)
    wd = tmp_path / "loop"
    paths = session.select(config, wd, budget=6)
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == 6 and paths["png"].stat().st_size > 0
    assert json.loads(paths["json"].read_text())["candidates"][0]["id"] == rows[0]["id"]
    assert session.select(config, wd, budget=6)["csv"].read_text() == paths["csv"].read_text()  # same round, same

    annotate_as_the_oracle(paths["csv"], session.build_pool(config.pool), tmp_path / "ann.csv")
    st.import_annotations(wd, tmp_path / "ann.csv")

    # crash after the new model is written, before state.json commits the round
    real_save = st.save_state
    monkeypatch.setattr(st, "save_state", lambda *a: (_ for _ in ()).throw(RuntimeError("power cut")))
    with pytest.raises(RuntimeError, match="power cut"):
        session.step(config, wd)
    state = st.load_state(wd)
    assert state.round == 0 and len(state.new_ids()) == 6 and state.model == "models/round_0000"

    monkeypatch.setattr(st, "save_state", real_save)
    summary = session.step(config, wd)
    st.import_annotations(wd, tmp_path / "ann.csv")  # re-import after the step: nothing new
    state = st.load_state(wd)
    assert summary.round == 1 and state.round == 1 and len(state.history) == 1
    assert len(state.labels) == 6 and state.new_ids() == [] and len(state.old_ids()) == 6
    assert (wd / "scores/round_0001.npz").is_file() and summary.n_unlabelled == 34
    again = session.step(config, wd)  # a rerun after the commit: the round is done, nothing is retrained
    assert again.already_done and again.round == 1 and st.load_state(wd).history == state.history
    picked = [r["id"] for r in csv.DictReader(session.select(config, wd, budget=5)["csv"].open())]
    assert not set(picked) & set(state.labels)  # labelled candidates are never proposed again
    status = session.status(wd)
    assert status["round"] == 1 and status["labelled"] == 6


def test_m0_from_a_genesis_encoder_keeps_its_weights(tmp_path):
    import jax

    from genesis_jax.models import build_model
    from genesis_jax.models.weights import save_weights

    config = load_config("active/acft:tiny", TINY)
    unet_cfg = {"name": "genesis_unet", "variant": "keras", "ndim": 3, "base_width": 2, "depth": 1}
    unet = build_model(unet_cfg)
    weights = jax.jit(unet.init)(jax.random.key(5), np.zeros((1, 4, 4, 4, 1), np.float32))
    save_weights(tmp_path / "genesis", weights, unet_cfg)
    learner = session.cached_learner(config)
    contexts = session.build_pool(config.pool).contexts
    with config.unlocked():
        config.init = str(tmp_path / "genesis")
    m0 = session.initial_variables(learner, config, contexts)
    np.testing.assert_array_equal(m0["params"]["backbone"]["encoder_0"]["conv_0"]["kernel"],
                                  np.asarray(weights["params"]["encoder_0"]["conv_0"]["kernel"]))
    wide_cfg = {**unet_cfg, "base_width": 4}
    wide = jax.jit(build_model(wide_cfg).init)(jax.random.key(5), np.zeros((1, 4, 4, 4, 1), np.float32))
    save_weights(tmp_path / "wide", wide, wide_cfg)
    with config.unlocked():
        config.init = str(tmp_path / "wide")
    with pytest.raises(ValueError, match="do not fit config.model"):
        session.initial_variables(learner, config, contexts)
