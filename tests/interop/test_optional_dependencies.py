"""Without the 'torch' extra, converting says which extra to install (torch and h5py are imported lazily)."""

import sys

import pytest

from genesis_jax.cli import main
from genesis_jax.interop import InteropError, read_keras_h5, read_pytorch


@pytest.mark.parametrize("module", ["torch", "h5py"])
def test_missing_extra_names_the_install_command(tmp_path, monkeypatch, capsys, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    source = tmp_path / ("w.pt" if module == "torch" else "w.h5")
    source.write_bytes(b"\0" * 16)
    reader = read_pytorch if module == "torch" else read_keras_h5
    with pytest.raises(InteropError, match=r"pip install 'genesis-jax\[torch\]'"):
        reader(source)
    assert main(["convert", "--from", str(source), "--to", str(tmp_path / "out")]) == 1
    assert "pip install 'genesis-jax[torch]'" in capsys.readouterr().err


def test_interop_imports_without_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "h5py", None)
    for name in [m for m in sys.modules if m.startswith("genesis_jax.interop")]:
        monkeypatch.delitem(sys.modules, name)
    import genesis_jax.interop as interop

    assert callable(interop.load_published)
