"""Multi-host data parallelism for real: two processes on 127.0.0.1 (2 CPU devices each) joined by
jax.distributed with gloo collectives. Both must end with identical parameters, and each must have read only its
own shard of the training cubes; the checkpoint holds one data-iterator state per process."""

import json
import socket
import subprocess

import numpy as np

from tests.train.helpers import REPO, driver_command, driver_env

STEPS, NUM_TRAIN, LOCAL_BATCH = 4, 64, 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expected_shard(index: int, count: int) -> list[int]:
    """The cube indices shard ``index`` consumes in STEPS steps, from the same pipeline pretrain uses."""
    from genesis_jax.data.pipeline import pretrain_dataset

    ds = pretrain_dataset(np.arange(NUM_TRAIN, dtype=np.float32), batch_size=LOCAL_BATCH, seed=0,
                          shard_index=index, shard_count=count)
    it = iter(ds)
    return [int(v) for _ in range(STEPS) for v in next(it)["cube"].ravel()]


def test_two_processes_train_identical_params_on_their_own_shards(tmp_path):
    workdir, port = tmp_path / "run", free_port()
    overrides = [f"--config.max_steps={STEPS}", "--config.global_batch_size=8"]
    procs = []
    for pid in range(2):
        extra = {"coordinator": f"127.0.0.1:{port}", "num_processes": 2, "process_id": pid,
                 "record_reads": str(tmp_path / f"reads_{pid}.json"), "num_train": NUM_TRAIN, "num_val": 8}
        procs.append(subprocess.Popen(driver_command(workdir, *overrides, extra=extra), env=driver_env(2), cwd=REPO,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err[-5000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["processes"] for r in results] == [2, 2] and [r["devices"] for r in results] == [4, 4]
    assert results[0]["params_fingerprint"] == results[1]["params_fingerprint"]
    assert results[0]["final_loss"] == results[1]["final_loss"]

    reads = [set(json.loads((tmp_path / f"reads_{pid}.json").read_text())) for pid in range(2)]
    assert not reads[0] & reads[1], "the processes read overlapping cubes"
    for pid in range(2):
        consumed = expected_shard(pid, 2)
        assert len(set(consumed)) == STEPS * LOCAL_BATCH and set(consumed) <= reads[pid]
    step_dir = workdir / "checkpoints" / str(STEPS)
    assert sorted(p.name for p in (step_dir / "data").glob("process_*.json")) == [
        "process_0-of-2.json", "process_1-of-2.json"]
