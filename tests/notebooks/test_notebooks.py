"""Every notebook under experiments/notebooks/ runs top to bottom at TINY settings (a cell error fails the test),
and is committed without outputs.

Each notebook runs in a fresh kernel of this interpreter (a kernelspec written to a temporary JUPYTER_PATH, so no
installed kernelspec is needed), with the repository root as working directory and on PYTHONPATH, one CPU device
(the 8 fake test devices of tests/conftest.py are not passed on) and a temporary GENESIS_JAX_NOTEBOOK_WORKDIR.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is needed to run the notebooks (pip install nbformat)")
nbclient = pytest.importorskip("nbclient", reason="nbclient is needed to run the notebooks (pip install nbclient)")
pytest.importorskip("ipykernel", reason="ipykernel is needed to run the notebooks (pip install ipykernel)")

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO_ROOT / "experiments" / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL_NAME = "genesis-jax-test"
CELL_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """Environment of the notebook kernels: a kernelspec for sys.executable, CPU only, one device."""
    jupyter_dir = tmp_path_factory.mktemp("jupyter")
    spec_dir = jupyter_dir / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "genesis_jax tests", "language": "python",
    }))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JUPYTER_PATH=str(jupyter_dir), JAX_PLATFORMS="cpu", GENESIS_JAX_NOTEBOOK_TINY="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
               TF_CPP_MIN_LOG_LEVEL="3")
    return env


def test_the_four_notebooks_exist():
    names = {p.name for p in NOTEBOOKS}
    assert {"quickstart.ipynb", "finetune_liver.ipynb", "unetpp.ipynb", "active_learning.ipynb"} <= names, sorted(names)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them before committing"


# quickstart runs in the default suite; the longer notebooks (30-50 s each on 2 cores) under `-m slow`
@pytest.mark.parametrize("path", [p if p.stem == "quickstart" else pytest.param(p, marks=pytest.mark.slow)
                                  for p in NOTEBOOKS], ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_env, tmp_path, monkeypatch):
    for key, value in kernel_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setenv("GENESIS_JAX_NOTEBOOK_WORKDIR", str(tmp_path))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=CELL_TIMEOUT_S,
                                     resources={"metadata": {"path": str(REPO_ROOT)}})
    started = time.time()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{path.name}: a cell failed:\n{err}")
    print(f"{path.name}: executed in {time.time() - started:.1f} s")
    figures = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if "image/png" in o.get("data", {}))
    assert figures >= 1, f"{path.name}: ran but drew no figure"
