"""The notebooks' first cell (the Colab set-up): identical in every notebook, a no-op outside Colab, and on Colab
it clones REPO_URL (or GENESIS_JAX_REPO_URL), installs the checkout and moves into it; without an address it stops
with a message that says what to set."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat reads the notebooks (pip install nbformat)")

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO_ROOT / "experiments" / "notebooks").glob("*.ipynb"))


def _setup_cell(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return next(c.source for c in nb.cells if c.cell_type == "code")


def test_every_notebook_starts_with_the_same_setup_cell():
    cells = {p.name: _setup_cell(p) for p in NOTEBOOKS}
    assert len(set(cells.values())) == 1, f"the first code cells differ: {sorted(cells)}"
    assert "<owner>" not in next(iter(cells.values()))


@pytest.fixture
def colab(tmp_path, monkeypatch):
    """A fake Colab runtime in an empty /content-like folder; pip calls are recorded, git runs for real."""
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    pip_calls, real_run = [], subprocess.run

    def run(cmd, *args, **kwargs):
        if cmd[:3] == [sys.executable, "-m", "pip"]:
            pip_calls.append(cmd)
            return subprocess.CompletedProcess(cmd, 0)
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", run)
    return pip_calls


def test_setup_cell_clones_installs_and_enters_the_checkout(colab, tmp_path, monkeypatch):
    if subprocess.run(["git", "--version"], capture_output=True).returncode != 0:
        pytest.skip("git is not installed")
    monkeypatch.setenv("GENESIS_JAX_REPO_URL", str(REPO_ROOT))
    exec(_setup_cell(NOTEBOOKS[0]), {})
    assert Path.cwd() == tmp_path / "genesis_jax"
    assert (tmp_path / "genesis_jax" / "pyproject.toml").is_file()
    assert colab == [[sys.executable, "-m", "pip", "install", "-q", "-e", "./genesis_jax"]]
    assert sys.path[0] == str(tmp_path / "genesis_jax")
    exec(_setup_cell(NOTEBOOKS[0]), {})  # run again (Run all twice): already inside, nothing more happens
    assert Path.cwd() == tmp_path / "genesis_jax" and len(colab) == 1


def test_setup_cell_without_an_address_says_what_to_set(colab, monkeypatch):
    monkeypatch.delenv("GENESIS_JAX_REPO_URL", raising=False)
    with pytest.raises(ValueError, match="set REPO_URL"):
        exec(_setup_cell(NOTEBOOKS[0]), {})
    assert colab == []


def test_setup_cell_does_nothing_outside_colab(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.chdir(tmp_path)
    exec(_setup_cell(NOTEBOOKS[0]), {})
    assert Path.cwd() == tmp_path and os.listdir(tmp_path) == []
