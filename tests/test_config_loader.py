"""Config names and variants: packaged names, the old ``configs/...py`` path form, a user's own config file, the one
variant parser (``parse_arg``) and its use on the first line of every packaged ``get_config``."""

import ast
import re
from pathlib import Path

import pytest

from genesis_jax.cli import main
from genesis_jax.config_loader import ConfigError, config_docstring, list_configs, load_config, resolve_config
from genesis_jax.configs.common import parse_arg

REPO = Path(__file__).resolve().parents[1]
PACKAGED = REPO / "genesis_jax" / "configs"


def _config_modules() -> list[str]:
    """Every packaged config module, found on disk (not by the loader's own listing)."""
    names = []
    for path in sorted(PACKAGED.rglob("*.py")):
        if path.name not in ("__init__.py", "common.py"):
            names.append(path.relative_to(PACKAGED).with_suffix("").as_posix())
    return names


def test_parse_arg_types_and_defaults():
    spec = dict(tiny=False, variant=("pytorch", "keras"), width=32, lr=0.1, name="x")
    assert parse_arg(None, **spec).to_dict() == dict(tiny=False, variant="pytorch", width=32, lr=0.1, name="x")
    opts = parse_arg("tiny,keras,width=8,lr=1e-3,name=run", **spec)
    assert opts.to_dict() == dict(tiny=True, variant="keras", width=8, lr=1e-3, name="run")
    assert isinstance(opts.width, int) and isinstance(opts.lr, float)
    assert parse_arg(" variant=keras , tiny=false ", **spec).to_dict()["tiny"] is False
    assert parse_arg("", **spec).variant == "pytorch"


@pytest.mark.parametrize("arg, message", [
    ("huge", "unknown option 'huge'; options: tiny, pytorch|keras (variant), width=<int>"),
    ("size=3", "unknown option 'size'"),
    ("width=wide", "option width='wide' is not a int"),
    ("variant=tf", "option variant='tf' must be one of pytorch|keras"),
    ("keras,pytorch", "option 'variant' is given twice"),
    ("tiny=maybe", "option tiny='maybe' is not a boolean"),
])
def test_parse_arg_errors_name_the_valid_options(arg, message):
    with pytest.raises(ValueError) as err:
        parse_arg(arg, tiny=False, variant=("pytorch", "keras"), width=32)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_parse_arg_rejects_an_ambiguous_spec():
    with pytest.raises(TypeError, match="both a switch and a value"):
        parse_arg(None, tiny=False, size=("tiny", "full"))


def test_every_packaged_config_is_listed_and_starts_with_parse_arg():
    assert [name for name, _ in list_configs()] == _config_modules()
    for name in _config_modules():
        tree = ast.parse((PACKAGED / f"{name}.py").read_text())
        (get_config,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "get_config"]
        first = get_config.body[0]
        calls = [n for n in ast.walk(first) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "parse_arg"]
        assert calls, f"{name}: the first line of get_config must call parse_arg(arg, ...)"


@pytest.mark.parametrize("name", _config_modules())
def test_unknown_option_is_one_clear_line(name):
    with pytest.raises(ConfigError) as err:
        load_config(f"{name}:no_such_option")
    text = str(err.value)
    assert text.startswith(f"{name}:no_such_option: unknown option 'no_such_option'; options: ") and "\n" not in text


def test_name_forms_resolve_to_the_same_module(tmp_path, monkeypatch):
    expected = load_config("finetune/lcs:tiny")
    monkeypatch.chdir(REPO)  # the checkout's top-level configs/ is a link to genesis_jax/configs
    assert (REPO / "configs").resolve() == PACKAGED.resolve()
    for spec in ("finetune/lcs:tiny", "finetune/lcs.py:tiny", "configs/finetune/lcs.py:tiny"):
        assert resolve_config(spec)[0].module == "genesis_jax.configs.finetune.lcs"
        assert load_config(spec) == expected
    monkeypatch.chdir(tmp_path)  # away from the checkout, the old form still names the packaged config
    assert resolve_config("configs/finetune/lcs.py:tiny")[0].path is None
    assert load_config("configs/finetune/lcs.py:tiny") == expected


def test_an_unknown_name_suggests_close_ones():
    with pytest.raises(ConfigError, match="not a packaged config; did you mean finetune/lcs"):
        load_config("finetune/lsc:tiny")


def test_a_users_config_file_can_import_the_packaged_ones(tmp_path, monkeypatch):
    user = tmp_path / "my_lcs.py"
    user.write_text(
        '"""My LCS: the packaged recipe with a wider network."""\n'
        "from genesis_jax.configs.common import parse_arg\n"
        "from genesis_jax.configs.finetune import lcs\n\n\n"
        "def get_config(arg=None):\n"
        "    opts = parse_arg(arg, tiny=False, width=4)\n"
        "    c = lcs.get_config('tiny' if opts.tiny else None)\n"
        "    c.model.base_width = opts.width\n"
        "    return c\n"
    )
    config = load_config(f"{user}:tiny,width=6", ["--config.max_epochs=3"])
    assert (config.model.base_width, config.max_epochs, config.task) == (6, 3, "segmentation")
    assert resolve_config(f"{user}:tiny")[0].path == user
    monkeypatch.chdir(tmp_path)
    assert load_config("my_lcs.py").model.base_width == 4  # relative to the current directory
    assert config_docstring("my_lcs.py") == "My LCS: the packaged recipe with a wider network."
    with pytest.raises(ConfigError, match="unknown option 'wide'; options: tiny, width=<int>"):
        load_config("my_lcs.py:wide")


def test_broken_user_files_are_named(tmp_path):
    (tmp_path / "no_fn.py").write_text("X = 1\n")
    (tmp_path / "syntax.py").write_text("def get_config(:\n")
    (tmp_path / "not_dict.py").write_text("def get_config():\n    return {}\n")
    with pytest.raises(ConfigError, match="no_fn.py: a config file must define get_config"):
        load_config(str(tmp_path / "no_fn.py"))
    with pytest.raises(ConfigError, match="syntax.py: cannot load the config file .SyntaxError"):
        load_config(str(tmp_path / "syntax.py"))
    with pytest.raises(ConfigError, match="not_dict.py: get_config returned dict"):
        load_config(str(tmp_path / "not_dict.py"))


def test_configs_command_lists_and_shows(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == _config_modules()
    assert main(["configs", "--show", "models/unet3d"]) == 0
    assert "genesis-jax summary --config=models/unet3d:pytorch" in capsys.readouterr().out
    assert main(["configs", "--show", "pretrain/dataset:tiny"]) == 0
    shown = capsys.readouterr().out
    assert "Fields of pretrain/dataset:tiny and their defaults" in shown
    assert re.search(r"^  data\.cubes\.margins\s+\(100, 100, 30\)$", shown, re.MULTILINE), shown
    assert re.search(r"^  input_shape\s+\(16, 16, 8, 1\)$", shown, re.MULTILINE)
