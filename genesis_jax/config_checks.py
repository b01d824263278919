"""Validation of config values, one function per config kind, called by the library entry points.

``validate_data_config`` (``config.data`` of ``data prepare`` and the training configs), ``validate_model_config``,
``validate_pretrain_config``, ``validate_finetune_config`` and ``validate_active_config`` raise
:class:`~genesis_jax.config_loader.ConfigError` with one line naming the field (``config.model.depth=0: must be an
integer >= 1``), before anything is read, trained or written. ``pretrain``, ``finetune``, ``data.prepare`` and the
active-learning session call them, so Python users get the same checks as the command line. A config of another
kind (a fine-tuning config given to ``pretrain``) is named as such. Only values are checked here: the names the
builders dispatch on (optimizer, loss, model) are checked against the same tables those builders use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from genesis_jax.config_loader import ConfigError

_MISSING = object()

# What tells the kinds apart (each kind's distinctive fields), for "this is a fine-tuning config" messages.
_KIND_MARKERS: dict[str, tuple[str, ...]] = {
    "fine-tuning": ("task", "sampling"),
    "pre-training": ("transforms", "per_device_batch_size"),
    "active-learning": ("learner", "pool"),
}
# The packaged config group of each kind (--config=<group>/<name>; see genesis-jax configs).
_KIND_DIRS = {"fine-tuning": "finetune/", "pre-training": "pretrain/", "active-learning": "active/", "data": "data/"}


def _get(config: Any, dotted: str) -> Any:
    node = config
    for part in dotted.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError, IndexError):
            return _MISSING
    return node


def config_kind(config: Any) -> str:
    """'pre-training', 'fine-tuning', 'active-learning', 'data' (only a ``data`` block) or 'unknown'."""
    for kind, markers in _KIND_MARKERS.items():
        if all(_get(config, m) is not _MISSING for m in markers):
            return kind
    if _get(config, "data") is not _MISSING and _get(config, "model") is _MISSING:
        return "data"
    return "unknown"


def _require_kind(config: Any, expected: str, command: str) -> None:
    kind = config_kind(config)
    if kind != expected:
        what = f"{_article(kind)} {kind} config" if kind != "unknown" else "not a config this command knows"
        raise ConfigError(f"{command} needs {_article(expected)} {expected} config ({_KIND_DIRS[expected]}...), "
                          f"but this is {what}")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class _Checker:
    """Collects the checks of one config; the first failure raises, naming ``config.<field>=<value>``."""

    def __init__(self, config: Any, prefix: str = "config"):
        self.config, self.prefix = config, prefix

    def fail(self, field: str, value: Any, why: str) -> None:
        raise ConfigError(f"{self.prefix}.{field}={value!r}: {why}")

    def value(self, field: str) -> Any:
        return _get(self.config, field)

    def check(self, field: str, ok: Callable[[Any], bool], why: str, optional: bool = False) -> None:
        v = self.value(field)
        if v is _MISSING or (optional and v is None):
            return
        try:
            good = ok(v)
        except (TypeError, ValueError):
            good = False
        if not good:
            self.fail(field, v, why)

    def int_at_least(self, field: str, low: int, optional: bool = False) -> None:
        self.check(field, lambda v: _is_int(v) and v >= low, f"must be an integer >= {low}"
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
        lengths = (length,) if _is_int(length) else tuple(length or ())

        def ok(v: Any) -> bool:
            v = tuple(v)
            return (not lengths or len(v) in lengths) and len(v) > 0 and all(_is_int(d) and d >= low for d in v)
        size = f"{' or '.join(map(str, lengths))} " if lengths else ""
        self.check(field, ok, f"must be {size}integers >= {low}" if low else f"must be {size}integers >= 0")


def validate_model_config(model: Any, prefix: str = "config.model") -> None:
    """The network block: a known ``name`` and variant, depth/width/channels/classes >= 1, ndim 2 or 3."""
    from genesis_jax.models.registry import MODELS

    c = _Checker(model, prefix)
    c.one_of("name", tuple(MODELS))
    c.one_of("ndim", (2, 3))
    if c.value("name") in ("genesis_unet", "genesis_classifier"):
        c.one_of("variant", ("pytorch", "keras"))
    for field in ("depth", "base_width", "in_channels", "num_classes", "hidden"):
        c.int_at_least(field, 1)
    c.one_of("dtype", ("float32", "bfloat16", "float16"))


def _input_divisor(model_config: Any) -> int | None:
    """What every spatial input size must be divisible by: the network's own rule (``pooling_factor`` of the
    Genesis U-Net, also as a classifier's backbone; ``2**level`` of UNet++). Building the module traces nothing."""
    from genesis_jax.models import build_model

    try:
        model = build_model(dict(model_config))
    except (TypeError, ValueError):  # the field checks above report what is wrong with the model block
        return None
    for module in (model, getattr(model, "backbone", None)):
        if hasattr(module, "pooling_factor"):
            return int(module.pooling_factor)
        if _is_int(getattr(module, "level", None)):
            return 2 ** module.level
    return None


def _input_shape(c: _Checker, model: Any) -> None:
    ndim = _get(model, "ndim")
    c.shape("input_shape", ndim + 1 if _is_int(ndim) else None)
    _divisible(c, "input_shape", model, channels_last=True)


def _divisible(c: _Checker, field: str, model: Any, channels_last: bool = False) -> None:
    divisor = _input_divisor(model)
    if divisor and divisor > 1:
        c.check(field, lambda v: all(d % divisor == 0 for d in tuple(v)[:-1 if channels_last else None]),
                f"its spatial sizes must be divisible by {divisor} (the network pools {divisor.bit_length() - 1} "
                "times)")


def validate_data_config(data: Any, prefix: str = "config.data") -> None:
    """A ``data`` block (genesis_jax.data): cube/crop shapes, counts, fractions, modality, storage, on_error."""
    c = _Checker(data, prefix)
    c.one_of("modality", ("ct", "mr"))
    c.one_of("mr_method", ("minmax", "percentile"))
    c.one_of("on_error", ("skip", "raise"))
    c.one_of("storage", ("memory", "tfds"))
    c.check("hu_max", lambda v: float(v) > float(data.hu_min), f"must be above hu_min={_get(data, 'hu_min')}")
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


def _run_settings(c: _Checker) -> None:
    """Fields the pre-training and fine-tuning configs share: batch sizes, step counts, optimiser, schedule."""
    from genesis_jax.train.schedules import OPTIMIZERS, SCHEDULES

    c.int_at_least("per_device_batch_size", 1, optional=True)
    c.int_at_least("global_batch_size", 1, optional=True)
    c.int_at_least("num_devices", 1, optional=True)
    c.int_at_least("steps_per_epoch", 1, optional=True)
    c.int_at_least("max_epochs", 1)
    c.int_at_least("max_steps", 1, optional=True)
    c.one_of("optimizer.name", OPTIMIZERS)
    c.positive("optimizer.learning_rate")
    c.one_of("schedule.kind", SCHEDULES)
    c.int_at_least("early_stopping.patience", 0)
    c.int_at_least("checkpoint.keep", 1)
    c.int_at_least("checkpoint.every_steps", 0)


def validate_pretrain_config(config: Any, *, data: bool = True) -> None:
    """A pre-training config (configs/pretrain/); ``data=False`` skips ``config.data`` (sources given in Python)."""
    _require_kind(config, "pre-training", "pretrain")
    validate_model_config(config.model)
    c = _Checker(config)
    _input_shape(c, config.model)
    _run_settings(c)
    c.int_at_least("validation_batches", 1, optional=True)
    if data:
        validate_data_config(config.data)


def validate_finetune_config(config: Any, *, data: bool = True, command: str = "finetune") -> None:
    """A fine-tuning config (configs/finetune/); also what ``evaluate`` reads."""
    from genesis_jax.models.initializers import KERNEL_INITIALIZERS
    from genesis_jax.train.finetune_data import SAMPLING_MODES
    from genesis_jax.train.losses import LOSSES

    _require_kind(config, "fine-tuning", command)
    validate_model_config(config.model)
    c = _Checker(config)
    c.one_of("task", ("segmentation", "classification"))
    _input_shape(c, config.model)
    _run_settings(c)
    c.one_of("loss", tuple(LOSSES))
    c.fraction("label_fraction", low_open=True)
    c.one_of("init.scratch_init", tuple(KERNEL_INITIALIZERS))
    c.one_of("sampling.mode", SAMPLING_MODES)
    c.fraction("sampling.foreground_fraction")
    c.int_at_least("sampling.patches_per_volume", 1)
    c.int_at_least("sampling.crops_per_volume", 1)
    c.int_at_least("sampling.validation_patches", 1)
    c.shape("eval.window")
    c.fraction("eval.overlap", high_open=True)
    c.int_at_least("eval.batch_size", 1)
    c.fraction("eval.threshold")
    c.one_of("eval.blend", ("gaussian", "constant"))
    c.one_of("eval.mode", ("accurate", "fast"))
    if data:
        validate_data_config(config.data)


def validate_active_config(config: Any) -> None:
    """An active-learning config (configs/active/): network, pool, patches, selection, learner."""
    from genesis_jax.active.learner import STRATEGIES
    from genesis_jax.active.selection import METHODS

    _require_kind(config, "active-learning", "al")
    validate_model_config(config.model)
    c = _Checker(config)
    c.int_at_least("pool.n", 1)
    c.int_at_least("pool.context_size", 1)
    c.fraction("pool.positive_fraction")
    c.shape("patches.patch_shape", 3)
    _divisible(c, "patches.patch_shape", config.model)
    c.shape("patches.box_shape", 3)
    c.int_at_least("patches.flips_rotations", 1)
    c.one_of("selection.method", METHODS)
    c.int_at_least("selection.omega", 1)
    c.one_of("learner.strategy", STRATEGIES)
    c.positive("learner.learning_rate")
    c.positive("learner.epochs")
    c.int_at_least("learner.batch_size", 1)
    c.int_at_least("learner.min_steps", 0)
    c.int_at_least("learner.max_steps", 1)
    c.int_at_least("learner.device_batch", 1)
    c.int_at_least("learner.chunk_size", 1)
    c.int_at_least("learner.calibration_size", 1)


_CLASSIFIERS = ("genesis_classifier",)


def check_weights_for_task(config: Any, model_config: dict[str, Any], metadata: dict[str, Any], source: Any) -> None:
    """Refuse weights of another kind of network than ``config.task`` evaluates, before any scoring.

    Segmentation weights under a classification config (their score would be a meaningless AUC), a classifier under
    a segmentation config, a classifier with another number of classes, and restoration pre-training weights under a
    segmentation config (a Dice of 0: they were never trained on the target) each raise ConfigError naming ``source``.
    """
    task = _get(config, "task")
    name = model_config.get("name")
    if task == "classification" and name is not None and name not in _CLASSIFIERS:
        raise ConfigError(f"{source}: these are {name} (segmentation) weights, but the config is a classification "
                          "task; give the weights of a classification fine-tuning run")
    if task == "segmentation" and name in _CLASSIFIERS:
        raise ConfigError(f"{source}: these are classifier weights, but the config is a segmentation task")
    want = _get(config, "model.num_classes")
    if task == "classification" and model_config.get("num_classes") not in (None, want):
        raise ConfigError(f"{source}: the network has {model_config.get('num_classes')} outputs, but "
                          f"config.model.num_classes={want}")
    if task == "segmentation" and metadata.get("source") == "genesis_jax pretrain":
        raise ConfigError(f"{source}: these are restoration pre-training weights, never trained on this task (their "
                          "Dice would be 0); fine-tune them first: genesis-jax finetune --init=<these weights>")


# Settings a resumed run takes from the new config although its checkpoint was made under others: allowed (a user
# may mean it), but the run is then not the one its first half began, so it is said once at resume.
RESUME_SENSITIVE = ("seed", "global_batch_size", "per_device_batch_size", "prng_impl")


def warn_changed_settings(saved: Any, current: Any, workdir: Any) -> list[str]:
    """Log a warning for each of RESUME_SENSITIVE that differs between the checkpoint's config and the current one;
    returns the changed fields. A field the checkpoint did not record is not compared."""
    import logging

    changed = [k for k in RESUME_SENSITIVE if k in saved and _get(current, k) is not _MISSING
               and saved[k] != _get(current, k)]
    if changed:
        logging.getLogger("genesis_jax").warning(
            "%s: resuming with changed %s (checkpoint: %s; now: %s): the resumed run differs from an "
            "uninterrupted one", workdir, ", ".join(changed), ", ".join(f"{k}={saved[k]!r}" for k in changed),
            ", ".join(f"{k}={_get(current, k)!r}" for k in changed))
    return changed
