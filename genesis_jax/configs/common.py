"""The one variant convention of the packaged configs: ``parse_arg``, the first line of every ``get_config``.

``--config=pretrain/genesis_chest_ct:tiny,keras`` calls ``get_config("tiny,keras")``; the config declares its
options with their defaults and gets them back typed (the model is big_vision's ``configs.common.parse_arg``)::

    def get_config(arg=None):
        opts = parse_arg(arg, tiny=False, variant=("pytorch", "keras"), width=32)
        # "tiny,keras,width=8" -> opts.tiny is True, opts.variant == "keras", opts.width == 8

The kind of an option follows from its default:
  bool          a switch: the bare name sets it (``tiny``); ``tiny=false`` / ``tiny=true`` also work.
  tuple of str  one of these values, the first is the default: the bare value selects it (``keras``), or
                ``variant=keras``.
  int / float / str
                ``name=value``, converted to the default's type.
Anything else (an unknown name, a bad value, an option given twice) raises ``ValueError`` naming the valid options.
"""

from __future__ import annotations

from typing import Any

import ml_collections

_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _describe(spec: dict[str, Any]) -> str:
    parts = []
    for name, default in spec.items():
        if isinstance(default, bool):
            parts.append(name)
        elif isinstance(default, tuple):
            parts.append(f"{'|'.join(default)} ({name})")
        else:
            parts.append(f"{name}=<{type(default).__name__}>")
    return ", ".join(parts) if parts else "none (this config takes no argument)"


def _convert(name: str, default: Any, value: str, valid: str) -> Any:
    if isinstance(default, bool):
        if value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        raise ValueError(f"option {name}={value!r} is not a boolean (true/false); options: {valid}")
    if isinstance(default, tuple):
        if value in default:
            return value
        raise ValueError(f"option {name}={value!r} must be one of {'|'.join(default)}; options: {valid}")
    try:
        return type(default)(value)
    except ValueError:
        raise ValueError(f"option {name}={value!r} is not a {type(default).__name__}; options: {valid}") from None


def parse_arg(arg: str | None, **spec: Any) -> ml_collections.FrozenConfigDict:
    """Parse a comma-separated variant string against ``spec`` (option name -> default, see the module docstring)."""
    for name, default in spec.items():
        if isinstance(default, tuple) and not (default and all(isinstance(v, str) for v in default)):
            raise TypeError(f"parse_arg: option {name!r}: a one-of option is a non-empty tuple of strings")
    choice_of = {value: name for name, default in spec.items() if isinstance(default, tuple) for value in default}
    clash = sorted(set(choice_of) & {n for n, d in spec.items() if isinstance(d, bool)})
    if clash:
        raise TypeError(f"parse_arg: {clash} is both a switch and a value of a one-of option")
    valid = _describe(spec)
    values = {name: (default[0] if isinstance(default, tuple) else default) for name, default in spec.items()}
    given: set[str] = set()
    for token in filter(None, (t.strip() for t in (arg or "").split(","))):
        name, sep, value = token.partition("=")
        name = name.strip()
        if sep:
            if name not in spec:
                raise ValueError(f"unknown option {name!r}; options: {valid}")
            parsed = _convert(name, spec[name], value.strip(), valid)
        elif isinstance(spec.get(name), bool):
            parsed = True
        elif name in choice_of:
            name, parsed = choice_of[name], name
        else:
            raise ValueError(f"unknown option {name!r}; options: {valid}")
        if name in given:
            raise ValueError(f"option {name!r} is given twice; options: {valid}")
        given.add(name)
        values[name] = parsed
    return ml_collections.FrozenConfigDict(values)
