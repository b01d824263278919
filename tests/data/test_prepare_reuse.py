"""`data prepare` on an existing dataset: reused only with the same settings (else one line naming them; `pretrain`
on it too), an overwrite whose rebuild fails or is killed keeps the old dataset."""

import os
from pathlib import Path

import pytest

from genesis_jax.cli import main
from genesis_jax.data.builders import DatasetError
from genesis_jax.data.prepare import prepare
from tests.data.helpers import tiny_data_config


def test_changed_settings_are_refused_and_a_failed_overwrite_keeps_the_old_dataset(tmp_path, capsys):
    config = tiny_data_config(tmp_path)
    first = prepare(config)
    assert not first.reused and prepare(config).reused

    changed = tiny_data_config(tmp_path, seed=1, **{"cubes.cubes_per_scan": 4})
    with pytest.raises(DatasetError, match=r"prepared with other settings \(cubes.cubes_per_scan: prepared 6, now 4; seed: prepared 0, now 1\); "
                       "nothing was rebuilt"):
        prepare(changed)
    cli = ["data", "prepare", "--config=data/genesis_cubes:tiny", f"--config.data.data_dir={tmp_path}/c"]
    assert main(cli) == 0
    capsys.readouterr()
    assert main([*cli, "--config.data.seed=7"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "other settings (seed: prepared 0, now 7)" in err and "--config.data.overwrite=True" in err

    # a rebuild that fails (no cube fits the phantoms) leaves the previous dataset, still usable and reused
    broken = tiny_data_config(tmp_path, overwrite=True, **{"cubes.cube_shape": (96, 96, 96)})
    with pytest.raises(DatasetError):
        prepare(broken)
    again = prepare(config)
    assert again.reused and again.examples == first.examples and again.dataset_dir == first.dataset_dir

    rebuilt = prepare(tiny_data_config(tmp_path, overwrite=True, **{"cubes.cubes_per_scan": 4}))
    assert not rebuilt.reused and sum(rebuilt.examples.values()) < sum(first.examples.values())


def test_an_overwrite_killed_midway_gives_the_old_dataset_back(tmp_path):
    config = tiny_data_config(tmp_path)
    first = prepare(config)
    dataset = Path(first.dataset_dir)
    # what a kill -9 during the rebuild leaves: the old dataset moved beside, the new one not finished
    os.replace(dataset, dataset.with_name(f".{dataset.name}.previous"))
    again = prepare(config)
    assert again.reused and again.examples == first.examples
    assert not dataset.with_name(f".{dataset.name}.previous").exists()


def test_pretrain_on_a_dataset_prepared_with_other_settings_is_one_line(tmp_path, capsys):
    data_dir = f"--config.data.data_dir={tmp_path}"
    assert main(["data", "prepare", "--config=pretrain/genesis_chest_ct:tiny", data_dir]) == 0
    capsys.readouterr()
    assert main(["pretrain", "--config=pretrain/genesis_chest_ct:tiny", f"--workdir={tmp_path / 'w'}",
                 data_dir, "--config.data.storage=tfds", "--config.data.seed=3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "prepared with other settings (seed: prepared 0, now 3)" in err, err
