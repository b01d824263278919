"""Find, load and list experiment configs: packaged names, a user's own config file, ``--config.x=y`` overrides.

A spec is ``NAME[:ARG]``; ``ARG`` goes to the config's ``get_config(ARG)`` (``get_config()`` when there is no
colon; see :func:`genesis_jax.configs.common.parse_arg`). ``NAME`` is, in this order:

1. an existing file (absolute, or relative to the current directory): a user's own config, run by path in
   :func:`_run_config_file` (it may import the packaged ones, ``from genesis_jax.configs.pretrain import
   genesis_chest_ct``). A file that is itself one of the packaged configs (the checkout's top-level ``configs``
   folder links to them) is imported as the packaged module instead, so a config never exists under two names.
2. a packaged config of :mod:`genesis_jax.configs`, with or without ``.py`` and an optional leading ``configs/``:
   ``models/unet3d``, ``models/unet3d.py`` and ``configs/models/unet3d.py`` all name
   ``genesis_jax.configs.models.unet3d``. These ship inside the package, so they work from any directory and from
   a wheel.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib
import re
import runpy
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

PACKAGE = "genesis_jax.configs"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*")


class ConfigError(ValueError):
    """A config that cannot be found or loaded, or an override that does not apply."""


@dataclasses.dataclass(frozen=True)
class ConfigSource:
    """Where a config comes from: a packaged module (``name`` like 'models/unet3d') or a user's file (``path``)."""

    name: str
    path: Path | None = None

    @property
    def module(self) -> str | None:
        return None if self.path else f"{PACKAGE}.{self.name.replace('/', '.')}"

    def __str__(self) -> str:
        return str(self.path) if self.path else self.name


def _packaged_root() -> Path:
    return Path(str(resources.files(PACKAGE)))


def _defines_get_config(source: str) -> bool:
    tree = ast.parse(source)
    return any(isinstance(node, ast.FunctionDef) and node.name == "get_config" for node in tree.body)


def list_configs() -> list[tuple[str, str]]:
    """(packaged name, first docstring line) of every packaged config: each module that defines ``get_config``.

    Read from the package's files without executing them; helpers (``common.py``, ``__init__.py``) are not listed.
    """
    out = []
    root = resources.files(PACKAGE)
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.name.startswith(("_", ".")):
                stack.append((entry, f"{prefix}{entry.name}/"))
            elif entry.name.endswith(".py") and not entry.name.startswith("_"):
                text = entry.read_text(encoding="utf-8")
                if _defines_get_config(text):
                    doc = (ast.get_docstring(ast.parse(text)) or "").strip()
                    out.append((prefix + entry.name[:-3], doc.splitlines()[0] if doc else ""))
    return sorted(out)


def _packaged_name(name: str, spec: str) -> str:
    name = name.removeprefix("./").removeprefix("configs/").removesuffix(".py")
    available = [n for n, _ in list_configs()]
    if _NAME.fullmatch(name) and name in available:
        return name
    close = difflib.get_close_matches(name, available, n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ConfigError(f"config {spec!r} not found: no such file, and {name!r} is not a packaged config; {hint}"
                      "`genesis-jax configs` lists the packaged ones")


def resolve_config(spec: str) -> tuple[ConfigSource, str | None]:
    """Split ``NAME[:ARG]`` and find the config (an existing file first, then a packaged name)."""
    name, sep, arg = spec.partition(":")
    if not name:
        raise ConfigError(f"empty config name in {spec!r}; e.g. --config=pretrain/genesis_chest_ct:tiny")
    path = Path(name).expanduser()
    if path.is_file():
        path = path.resolve()
        try:
            rel = path.relative_to(_packaged_root().resolve())
        except ValueError:
            return ConfigSource(name=str(path), path=path), (arg if sep else None)
        return ConfigSource(name=_packaged_name(rel.as_posix(), spec)), (arg if sep else None)
    return ConfigSource(name=_packaged_name(name, spec)), (arg if sep else None)


def _run_config_file(path: Path) -> dict[str, Any]:
    """Run a user's config file by path and return its globals: the one place a file is executed as code."""
    try:
        return runpy.run_path(str(path), run_name="genesis_jax_user_config")
    except (SyntaxError, ImportError, OSError) as err:
        raise ConfigError(f"{path}: cannot load the config file ({type(err).__name__}: {err})") from None


def _get_config_function(source: ConfigSource) -> Callable[..., Any]:
    if source.path is not None:
        namespace = _run_config_file(source.path)
    else:
        namespace = vars(importlib.import_module(source.module))
    get_config = namespace.get("get_config")
    if not callable(get_config):
        raise ConfigError(f"{source}: a config file must define get_config(arg=None) returning a ConfigDict")
    return get_config


def config_docstring(spec: str) -> str:
    """The module docstring of a config (packaged name or file), read without executing it."""
    source, _ = resolve_config(spec)
    if source.path is not None:
        text = source.path.read_text(encoding="utf-8")
    else:
        text = resources.files(PACKAGE).joinpath(f"{source.name}.py").read_text(encoding="utf-8")
    return ast.get_docstring(ast.parse(text)) or ""


def config_fields(config: ml_collections.ConfigDict, prefix: str = "") -> list[tuple[str, Any]]:
    """Every leaf field of ``config`` as (dotted name, value), alphabetically: what ``--config.NAME=VALUE``
    overrides."""
    out: list[tuple[str, Any]] = []
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict) and len(value):
            out.extend(config_fields(value, f"{prefix}{key}."))
        else:
            out.append((f"{prefix}{key}", value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value))
    return out


def _missing_field(err: BaseException) -> str:
    """The field a KeyError/AttributeError of ml_collections names, with its "did you mean" suggestion, as plain
    text (``str(KeyError)`` is the repr of its message: quotes and a literal newline escape)."""
    text = str(err.args[0]) if err.args else str(err)
    text = text.replace("\\n", "\n").replace("\\'", "'")  # ml_collections puts a repr into the message
    first, _, rest = text.partition("\n")
    field = first.strip().strip("'\"")
    suggestion = re.search(r'Did you mean "([^"]+)"', rest)
    return f"{field} (did you mean {suggestion.group(1)}?)" if suggestion else field


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Load ``NAME[:ARG]`` and apply ``--config.a.b=value`` overrides (typed as the field's current value).

    Raises ConfigError naming the config or the override when either is wrong.
    """
    source, arg = resolve_config(spec)
    label = f"{source}{':' + arg if arg else ''}"
    bad = [o for o in overrides if not o.startswith("--config.")]
    if bad:
        raise ConfigError(f"unexpected argument(s) {bad}: overrides take the form --config.field=value")
    get_config = _get_config_function(source)
    try:
        config = get_config() if arg is None else get_config(arg)
    except (AttributeError, ImportError, KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{label}: {err}") from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{label}: get_config returned {type(config).__name__}, not an ml_collections.ConfigDict")
    argv = ["genesis-jax", *overrides]
    flag_values = flags.FlagValues()
    try:
        # sys_argv: config_flags decides which override flags exist from the argv it is given (default: sys.argv),
        # and types them from the config's fields when the flag is defined.
        config_flags.DEFINE_config_dict("config", config, "experiment config", flag_values=flag_values,
                                        lock_config=True, sys_argv=argv)
        flag_values(argv)
        return flag_values.config
    except flags.Error as err:
        raise ConfigError(f"{label}: {err}") from None
    except (KeyError, AttributeError) as err:  # config_flags reports a missing field as either
        raise ConfigError(
            f"{label}: an override names a field the config does not have: {_missing_field(err)}; "
            f"overrides were {' '.join(overrides)}"
        ) from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{label}: {err}") from None
