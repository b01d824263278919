"""Load ml_collections experiment configs (``path.py[:arg]`` plus ``--config.x=y`` overrides) and list them.

Config files live in the repository's top-level ``configs/``. A relative path is looked up from the current
directory first, then from the repository root, so ``--config=configs/models/unet3d.py:pytorch`` works from
anywhere in an editable install.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS_DIR = REPO_ROOT / "configs"


class ConfigError(ValueError):
    """A config file that cannot be found or loaded, or an override that does not apply."""


def resolve_config_path(spec: str) -> tuple[Path, str | None]:
    """Split ``path.py[:arg]`` and find the file (cwd first, then the repository root)."""
    path_str, sep, arg = spec.partition(":")
    path = Path(path_str).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, REPO_ROOT / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve(), (arg if sep else None)
    raise ConfigError(
        f"config file {path_str!r} not found (looked in {', '.join(str(c) for c in candidates)}); "
        f"`genesis-jax configs` lists the available ones"
    )


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Load ``path.py[:arg]`` and apply ``--config.a.b=value`` overrides (typed as the field's current value).

    Raises ConfigError naming the file or the override when either is wrong.
    """
    path, arg = resolve_config_path(spec)
    bad = [o for o in overrides if not o.startswith("--config.")]
    if bad:
        raise ConfigError(f"unexpected argument(s) {bad}: overrides take the form --config.field=value")
    full_spec = str(path) + (f":{arg}" if arg is not None else "")
    argv = ["genesis-jax", f"--config={full_spec}", *overrides]
    flag_values = flags.FlagValues()
    # sys_argv: config_flags decides which override flags exist from the argv it is given (default: sys.argv).
    config_flags.DEFINE_config_file(
        "config", None, "experiment config", flag_values=flag_values, lock_config=True, sys_argv=argv
    )
    try:
        flag_values(argv)
        config = flag_values.config
    except flags.Error as err:
        raise ConfigError(f"{path}: {err}") from None
    except KeyError as err:
        raise ConfigError(
            f"{path}: an override names a field the config does not have: {err}; overrides were {list(overrides)}"
        ) from None
    except (AttributeError, TypeError, ValueError) as err:
        raise ConfigError(f"{path}{':' + arg if arg else ''}: {err}") from None
    return config


def config_docstring(path: Path) -> str:
    """The module docstring of a config file, read without executing it."""
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""


def list_configs(root: Path = CONFIGS_DIR) -> list[tuple[str, str]]:
    """(path relative to the repository, first docstring line) for every config file under ``root``."""
    out = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "__init__.py" or path.name.startswith("_"):
            continue
        doc = config_docstring(path)
        out.append((str(path.relative_to(root.parent)), doc.strip().splitlines()[0] if doc.strip() else ""))
    return out
