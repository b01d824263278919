"""Config checking shared by every room, and the checks of the ground-level blocks (``data``, ``model``).

:class:`Checker` collects the checks of one config and raises
:class:`~genesis_jax.config_loader.ConfigError` with one line naming the field (``config.model.depth=0: must be an
integer >= 1``); :func:`config_kind` and :func:`require_kind` name a config of another kind than a command needs
(a fine-tuning config given to ``pretrain``). ``validate_data_config`` (``config.data`` of ``data prepare`` and the
training configs) and ``validate_model_config`` live here; each room validates its own config kind on top of them:
``genesis_jax.train.config_checks`` (pre-training, fine-tuning, evaluation weights, resume) and
``genesis_jax.active.config_checks`` (active learning), so the import graph points one way. Only values are checked:
the names the builders dispatch on (optimizer, loss, model) are checked against the same tables those builders use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from genesis_jax.config_loader import ConfigError

MISSING = object()

# What tells the kinds apart, for "this is a fine-tuning config" messages: a kind is recognised by any one of its
# sets of distinctive fields. A pre-training config names its pretext (genesis_jax.pretext); one written before
# pretexts were plug-ins is recognised by its restoration deformations.
_KIND_MARKERS: dict[str, tuple[tuple[str, ...], ...]] = {
    "fine-tuning": (("task", "sampling"),),
    "pre-training": (("pretext.name", "per_device_batch_size"), ("transforms", "per_device_batch_size")),
    "active-learning": (("learner", "pool"),),
}
# The packaged config group of each kind (--config=<group>/<name>; see genesis-jax configs).
_KIND_DIRS = {"fine-tuning": "finetune/", "pre-training": "pretrain/", "active-learning": "active/", "data": "data/"}


def get_field(config: Any, dotted: str) -> Any:
    node = config
    for part in dotted.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError, IndexError):
            return MISSING
    return node


def config_kind(config: Any) -> str:
    """'pre-training', 'fine-tuning', 'active-learning', 'data' (only a ``data`` block) or 'unknown'."""
    for kind, alternatives in _KIND_MARKERS.items():
        if any(all(get_field(config, m) is not MISSING for m in markers) for markers in alternatives):
            return kind
    if get_field(config, "data") is not MISSING and get_field(config, "model") is MISSING:
        return "data"
    return "unknown"


def require_kind(config: Any, expected: str, command: str) -> None:
    kind = config_kind(config)
    if kind != expected:
        what = f"{_article(kind)} {kind} config" if kind != "unknown" else "not a config this command knows"
        raise ConfigError(f"{command} needs {_article(expected)} {expected} config ({_KIND_DIRS[expected]}...), "
                          f"but this is {what}")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class Checker:
    """Collects the checks of one config; the first failure raises, naming ``config.<field>=<value>``."""

    def __init__(self, config: Any, prefix: str = "config"):
        self.config, self.prefix = config, prefix

    def fail(self, field: str, value: Any, why: str) -> None:
        raise ConfigError(f"{self.prefix}.{field}={value!r}: {why}")

    def value(self, field: str) -> Any:
        return get_field(self.config, field)

    def check(self, field: str, ok: Callable[[Any], bool], why: str, optional: bool = False) -> None:
        v = self.value(field)
        if v is MISSING or (optional and v is None):
            return
        try:
            good = ok(v)
        except (TypeError, ValueError):
            good = False
        if not good:
            self.fail(field, v, why)

    def int_at_least(self, field: str, low: int, optional: bool = False) -> None:
        self.check(field, lambda v: is_int(v) and v >= low, f"must be an integer >= {low}"
                   + (" (or None)" if optional else ""), optional)

    def positive(self, field: str) -> None:
        self.check(field, lambda v: float(v) > 0, "must be a number > 0")

    def fraction(self, field: str, low_open: bool = False, high_open: bool = False) -> None:
        def ok(v: Any) -> bool:
            v = float(v)
            return (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1)
        self.check(field, ok, f"must be in {'(' if low_open else '['}0, 1{')' if high_open else ']'}")

    def one_of(self, field: str, choices: Sequence[Any]) -> None:
        self.check(field, lambda v: v in choices, f"must be one of {', '.join(map(repr, choices))}")

    def shape(self, field: str, length: int | Sequence[int] | None = None, low: int = 1) -> None:
        lengths = (length,) if is_int(length) else tuple(length or ())

        def ok(v: Any) -> bool:
            v = tuple(v)
            return (not lengths or len(v) in lengths) and len(v) > 0 and all(is_int(d) and d >= low for d in v)
        size = f"{' or '.join(map(str, lengths))} " if lengths else ""
        self.check(field, ok, f"must be {size}integers >= {low}" if low else f"must be {size}integers >= 0")


def validate_model_config(model: Any, prefix: str = "config.model") -> None:
    """The network block: a known ``name`` and (where the network has published variants) variant,
    depth/width/channels/classes >= 1, ndim 2 or 3."""
    from genesis_jax.models.registry import MODELS

    c = Checker(model, prefix)
    c.one_of("name", tuple(MODELS))
    c.one_of("ndim", (2, 3))
    name = c.value("name")
    spec = MODELS.get(name) if isinstance(name, str) else None
    if spec is not None and spec.variant_field:
        c.one_of(spec.variant_field, tuple(spec.published_variants))
    for field in ("depth", "base_width", "in_channels", "num_classes", "hidden"):
        c.int_at_least(field, 1)
    c.one_of("dtype", ("float32", "bfloat16", "float16"))
    backbone = get_field(model, "backbone")
    if hasattr(backbone, "keys"):  # a classifier on another network's encoder (models.heads)
        validate_model_config(backbone, f"{prefix}.backbone")


def _input_divisor(model_config: Any) -> int | None:
    """What every spatial input size must be divisible by, as the network's spec says. Building the module traces
    nothing."""
    from genesis_jax.models import contract

    try:
        return contract(dict(model_config)).input_divisor
    except (TypeError, ValueError):  # the field checks above report what is wrong with the model block
        return None


def check_input_shape(c: Checker, model: Any) -> None:
    ndim = get_field(model, "ndim")
    c.shape("input_shape", ndim + 1 if is_int(ndim) else None)
    check_divisible(c, "input_shape", model, channels_last=True)


def check_divisible(c: Checker, field: str, model: Any, channels_last: bool = False) -> None:
    divisor = _input_divisor(model)
    if divisor and divisor > 1:
        c.check(field, lambda v: all(d % divisor == 0 for d in tuple(v)[:-1 if channels_last else None]),
                f"its spatial sizes must be divisible by {divisor} (the network pools {divisor.bit_length() - 1} "
                "times)")


def validate_data_config(data: Any, prefix: str = "config.data") -> None:
    """A ``data`` block (genesis_jax.data): cube/crop shapes, counts, fractions, modality, storage, on_error."""
    c = Checker(data, prefix)
    c.one_of("modality", ("ct", "mr"))
    c.one_of("mr_method", ("minmax", "percentile"))
    c.one_of("on_error", ("skip", "raise"))
    c.one_of("storage", ("memory", "tfds"))
    c.check("hu_max", lambda v: float(v) > float(data.hu_min), f"must be above hu_min={get_field(data, 'hu_min')}")
    c.shape("cubes.cube_shape", 3)
    c.shape("cubes.margins", 3, low=0)
    c.int_at_least("cubes.cubes_per_scan", 1)
    c.int_at_least("cubes.max_attempts", 1)
    c.int_at_least("cubes.depth_lookahead", 0)
    c.shape("crop_shape", 3)
    c.int_at_least("synthetic.num_scans", 1)
    c.shape("synthetic.shape", 3)
    c.fraction("validation_fraction", high_open=True)
    c.fraction("test_fraction", high_open=True)
    c.int_at_least("memory_buffer_mb", 0)
    c.check("target_spacing", lambda v: len(v) in (0, 3) and all(float(s) > 0 for s in v),
            "must be () (native grid) or 3 spacings > 0 (mm)")
