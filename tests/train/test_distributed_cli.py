"""Multi-host settings from flags and environment, and the pretrain CLI's error paths (no training runs here)."""

import pytest

from genesis_jax.cli import main
from genesis_jax.train.distributed import DistributedError, settings_from


def test_single_process_by_default_and_auto_detection_on_request():
    assert settings_from(env={}) is None
    assert settings_from(env={"GENESIS_JAX_DISTRIBUTED": "auto"}) == {}


def test_flags_and_environment():
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert settings_from(env=env) == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}
    assert settings_from("127.0.0.1:9", 2, 0, env=env) == {"coordinator_address": "127.0.0.1:9", "num_processes": 2,
                                                          "process_id": 0}


def test_incomplete_or_inconsistent_settings_name_what_is_missing():
    with pytest.raises(DistributedError, match="missing: num_processes, process_id"):
        settings_from("127.0.0.1:9", env={})
    with pytest.raises(DistributedError, match="--process_id=2 must lie in"):
        settings_from("127.0.0.1:9", 2, 2, env={})


def test_cli_reports_bad_flags_and_configs(tmp_path, capsys):
    assert main(["pretrain", "--config=pretrain/genesis_chest_ct:tiny", f"--workdir={tmp_path}",
                 "--num_processes=2"]) == 2
    assert "missing: coordinator_address, process_id" in capsys.readouterr().err
    assert main(["pretrain", "--config=pretrain/nope", f"--workdir={tmp_path}"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["pretrain", "--config=pretrain/genesis_chest_ct:tiny", f"--workdir={tmp_path}",
                 "--config.optimizer.nmae=sgd"]) == 2
    assert "nmae" in capsys.readouterr().err
