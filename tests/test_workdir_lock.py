"""One writer per work directory or dataset (genesis_jax.workdir.hold): every writing command refuses at once, in
one line naming the holder's pid, while another process holds the lock (and in one line when it cannot write
there); the lock dies with its holder (kill -9);
`al label` during `al step` waits for the step and loses no label; directories are swapped in atomically."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genesis_jax.active import session
from genesis_jax.active import state as st
from genesis_jax.cli import main
from genesis_jax.config_loader import load_config
from genesis_jax.workdir import LOCK_FILE, WorkdirBusy, hold, replace_directory, sibling_tmp_dir

REPO = Path(__file__).resolve().parents[1]
AL_TINY = [  # the tiny active-learning loop of tests/active/test_state.py
    "--config.pool.n=40", "--config.pool.context_size=6", "--config.patches.patch_shape=(4, 4, 4)",
    "--config.patches.box_shape=(4, 4, 4)", "--config.model.depth=1", "--config.model.hidden=8",
    "--config.learner.batch_size=8", "--config.learner.calibration_size=16", "--config.learner.min_steps=5",
    "--config.learner.max_steps=10", "--config.learner.bucket_min=16", "--config.learner.chunk_size=64",
    "--config.learner.device_batch=16",
]
HOLDER = ("import sys; from genesis_jax.workdir import hold\n"
          "with hold(sys.argv[1], 'test holder'):\n    print('held', flush=True); sys.stdin.read()")


def hold_in_other_process(directory: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory)], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def dataset_lock_dir(tmp_path: Path) -> Path:
    from genesis_jax.data.builders import make_builder

    data = load_config("data/genesis_cubes:tiny", [f"--config.data.data_dir={tmp_path / 'tfds'}"]).data
    return Path(make_builder(data).data_dir).parent


def commands(tmp_path: Path, wd: Path) -> dict[str, list[str]]:
    al = ["--config=active/acft:tiny", f"--workdir={wd}", *AL_TINY]
    return {
        "pretrain": ["pretrain", "--config=pretrain/genesis_chest_ct:tiny", f"--workdir={wd}"],
        "finetune": ["finetune", "--config=finetune/ncc:tiny", f"--workdir={wd}", "--init=scratch"],
        "al select": ["al", "select", *al, "--budget=4"],
        "al step": ["al", "step", *al],
        "data prepare": ["data", "prepare", "--config=data/genesis_cubes:tiny",
                         f"--config.data.data_dir={tmp_path / 'tfds'}"],
        "evaluate": ["evaluate", "--config=finetune/ncc:tiny", f"--weights={tmp_path / 'none'}",
                     f"--out={wd}"],
    }


@pytest.mark.parametrize("name", ["pretrain", "finetune", "al select", "al step", "data prepare", "evaluate"])
def test_a_second_writer_is_refused_at_once_naming_the_holder(name, tmp_path, capsys):
    wd = tmp_path / "wd"
    locked = dataset_lock_dir(tmp_path) if name == "data prepare" else wd
    holder = hold_in_other_process(locked)
    try:
        started = time.time()
        assert main(commands(tmp_path, wd)[name]) == 3
        assert time.time() - started < 30  # refused before any training or data work
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"`test holder` (pid {holder.pid})" in err and str(locked) in err, err
    finally:
        holder.communicate("")
    assert not (wd / "checkpoints").exists() and not (wd / st.STATE_FILE).exists()


def test_an_unwritable_workdir_is_one_line_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    started = time.time()
    assert main(["pretrain", "--config=pretrain/genesis_chest_ct:tiny", f"--workdir={blocker / 'w'}"]) == 3
    err = capsys.readouterr().err
    assert time.time() - started < 30 and err.count("\n") == 1 and f"{blocker / 'w'}: cannot write to the work directory" in err, err


def test_the_lock_dies_with_its_holder_and_nests_in_one_process(tmp_path):
    holder = hold_in_other_process(tmp_path)
    with pytest.raises(WorkdirBusy, match=f"pid {holder.pid}"), hold(tmp_path, "second"):
        pass
    holder.send_signal(signal.SIGKILL)  # no cleanup runs: the kernel drops the flock
    holder.wait()
    with hold(tmp_path, "after the crash"), hold(tmp_path, "nested call in the same process"):
        assert f"{os.getpid()} after the crash" in (tmp_path / LOCK_FILE).read_text()


def test_replace_directory_swaps_a_complete_directory_in(tmp_path):
    final = tmp_path / "weights"
    for text in ("old", "new"):
        tmp = sibling_tmp_dir(final)
        (tmp / "file").write_text(text)
        replace_directory(tmp, final)
    assert (final / "file").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["weights"]


def _labels_file(path: Path, ids: list[str], oracle: dict) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label"])
        w.writerows([i, int(oracle[i])] for i in ids)
    return path


def test_al_label_during_al_step_waits_and_no_label_is_lost(tmp_path, capsys):
    config = load_config("active/acft:tiny", AL_TINY)
    wd = tmp_path / "loop"
    first = [r["id"] for r in csv.DictReader(session.select(config, wd, budget=8)["csv"].open())]
    pool = session.build_pool(config.pool)
    oracle = dict(zip(pool.ids.tolist(), pool.labels))
    st.import_annotations(wd, _labels_file(tmp_path / "a.csv", first, oracle))
    later = [i for i in pool.ids.tolist() if i not in first][:5]

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    step = subprocess.Popen([sys.executable, "-m", "genesis_jax.cli", "al", "step",
                             "--config=active/acft:tiny", f"--workdir={wd}", *AL_TINY],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while "al step" not in ((wd / LOCK_FILE).read_text() if (wd / LOCK_FILE).exists() else ""):
        assert step.poll() is None and time.time() < deadline, step.communicate()
        time.sleep(0.02)
    capsys.readouterr()
    assert main(["al", "label", f"--workdir={wd}", f"--file={_labels_file(tmp_path / 'b.csv', later, oracle)}"]) == 0
    _, err = step.communicate(timeout=120)
    assert step.returncode == 0, err[-3000:]
    captured = capsys.readouterr()
    assert f"in use by `al step` (pid {step.pid}); waiting for it to finish" in captured.err  # it did overlap
    assert "round 1: 5 added" in captured.out  # imported after the step committed round 1
    state = st.load_state(wd)
    assert state.round == 1 and len(state.labels) == 13 and state.new_ids() == sorted(later)
