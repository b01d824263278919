"""`genesis-jax data prepare|samples` end to end, and every data config loads with a docstring giving its command."""

import pytest

from genesis_jax.cli import main
from genesis_jax.config_loader import config_docstring, load_config
from genesis_jax.data import samples


def test_data_prepare_prints_a_summary(tmp_path, capsys):
    overrides = [f"--config.data.data_dir={tmp_path}", "--config.data.synthetic.shape=(64,64,64)",
                 "--config.data.synthetic.num_scans=3", "--config.data.cubes.cube_shape=(16,16,8)",
                 "--config.data.cubes.margins=(4,4,2)", "--config.data.cubes.cubes_per_scan=5"]
    assert main(["data", "prepare", "--config=data/genesis_cubes:tiny", *overrides]) == 0
    out = capsys.readouterr().out
    assert "scans read: 3" in out and "skipped: 0" in out and "examples written: 15 (train 10, validation 5)" in out
    assert "bytes on disk:" in out and str(tmp_path) in out
    assert main(["data", "prepare", "--config=data/genesis_cubes:tiny", *overrides]) == 0
    assert "already prepared: reused" in capsys.readouterr().out


def test_data_prepare_reports_a_missing_directory(tmp_path, capsys):
    code = main(["data", "prepare", "--config=data/downstream:lits",
                 f"--config.data.manual_dir={tmp_path / 'nowhere'}", f"--config.data.data_dir={tmp_path}"])
    assert code == 1 and "nowhere: manual directory does not exist" in capsys.readouterr().err


def test_data_samples_lists_the_real_volumes(capsys):
    try:
        samples.fetch_samples()
    except samples.SampleDataUnavailable as err:
        pytest.skip(f"TotalSegmentator sample sdist not available (no PyPI access and not cached): {err}")
    assert main(["data", "samples"]) == 0
    out = capsys.readouterr().out
    assert "ct_abdomen" in out and "liver 41,692 voxels" in out and "122x101x112" in out
    assert "not manual annotations" in out


@pytest.mark.parametrize("spec", ["data/genesis_cubes:tiny", "data/genesis_cubes:samples",
                                  "data/genesis_cubes:directory", "data/luna16",
                                  "data/downstream:lits", "data/downstream:brats",
                                  "data/downstream:lidc", "data/downstream:luna16_candidates",
                                  "data/downstream:liver_samples",
                                  "data/downstream:liver_synthetic"])
def test_data_configs_load_and_document_their_command(spec):
    config = load_config(spec)
    assert config.data.builder and config.data.name
    assert "genesis-jax data prepare --config=data/" in config_docstring(spec)


def test_liver_synthetic_volumes_for_finetuning():
    from genesis_jax.data.sources import volume_source

    config = load_config("data/downstream:liver_synthetic",
                         ["--config.data.synthetic.shape=(48,48,40)"]).data
    train, val = volume_source(config, "train"), volume_source(config, "validation")
    assert (len(train), len(val)) == (4, 2) and all(v["label"].any() for v in train)
