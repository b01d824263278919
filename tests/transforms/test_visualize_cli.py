"""`genesis-jax visualize-transforms`: a PNG grid from a synthetic, a given or the real sample CT."""

import numpy as np
import pytest
from PIL import Image

from genesis_jax.cli import main as cli_main
from genesis_jax.data.samples import MANIFEST, cache_root


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_grid_from_the_synthetic_phantom(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert cli_main(["visualize-transforms", "--out", str(out), "--num-samples", "2", "--synthetic"]) == 0
    width, height = _png_size(out)
    assert width > height  # 7 columns, 2 rows
    assert "synthetic CT phantom" in capsys.readouterr().out


def test_grid_from_npy_cubes_and_clear_errors(tmp_path, capsys):
    cubes = np.random.default_rng(0).random((3, 1, 32, 32, 16))  # the published (N, 1, X, Y, Z) layout
    np.save(tmp_path / "cubes.npy", cubes)
    out = tmp_path / "grid.png"
    assert cli_main(["visualize-transforms", "--out", str(out), "--num-samples", "1", "--cube",
                     str(tmp_path / "cubes.npy")]) == 0
    assert out.exists()
    np.save(tmp_path / "hu.npy", cubes * 2000 - 1000)
    assert cli_main(["visualize-transforms", "--out", str(out), "--cube", str(tmp_path / "hu.npy")]) == 2
    assert "hu.npy" in capsys.readouterr().err


def test_grid_from_the_real_sample_ct(tmp_path, capsys):
    if not (cache_root() / "samples" / "totalsegmentator-2.18.0" / MANIFEST).exists():
        pytest.skip("the real sample CT is not in the cache (run `genesis-jax data samples` once, online)")
    out = tmp_path / "grid.png"
    assert cli_main(["visualize-transforms", "--out", str(out), "--num-samples", "1"]) == 0
    assert "real chest CT" in capsys.readouterr().out
