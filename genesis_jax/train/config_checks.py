"""Checks of the training rooms' configs: pre-training and fine-tuning (also what ``evaluate`` reads), weights of
the right kind of network for an evaluation, and the settings a resumed run changed.

Built on :mod:`genesis_jax.config_checks` (the field checker and the ``data``/``model`` blocks); the names a
config may pick (optimizer, schedule, loss, sampling mode) come from the tables of the training builders.
"""

from __future__ import annotations

import logging
from typing import Any

from genesis_jax.config_checks import (
    MISSING,
    Checker,
    check_input_shape,
    get_field,
    require_kind,
    validate_data_config,
    validate_model_config,
)
from genesis_jax.config_loader import ConfigError
from genesis_jax.models.initializers import KERNEL_INITIALIZERS
from genesis_jax.models.registry import MODELS
from genesis_jax.data.task_data import SAMPLING_MODES
from genesis_jax.train.finetune_steps import augment_settings
from genesis_jax.evaluation.metric_table import METRICS, metric_names
from genesis_jax.pretext.registry import PRETEXTS
from genesis_jax.train.losses import LOSSES
from genesis_jax.train.schedules import OPTIMIZERS, SCHEDULES


def _run_settings(c: Checker) -> None:
    """Fields the pre-training and fine-tuning configs share: batch sizes, step counts, optimiser, schedule."""
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
    c.fraction("ema_decay", high_open=True)


def validate_pretrain_config(config: Any, *, data: bool = True) -> None:
    """A pre-training config (configs/pretrain/); ``data=False`` skips ``config.data`` (sources given in Python)."""
    require_kind(config, "pre-training", "pretrain")
    validate_model_config(config.model)
    c = Checker(config)
    check_input_shape(c, config.model)
    _run_settings(c)
    c.int_at_least("validation_batches", 1, optional=True)
    _check_pretext(c, config)
    if data:
        validate_data_config(config.data)


def _check_pretext(c: Checker, config: Any) -> None:
    """``config.pretext`` (absent: Genesis restoration): a registered name, the gate's thresholds, and the
    pretext's own fields (its module's ``check_config``)."""
    block = get_field(config, "pretext")
    if block is MISSING:
        return
    c.one_of("pretext.name", tuple(PRETEXTS))
    c.check("pretext.gate.max_ratio", lambda v: float(v) > 0, "must be a number > 0")
    c.check("pretext.gate.max_clean_mse", lambda v: float(v) >= 0, "must be a number >= 0 (or None: not gated)",
            optional=True)
    PRETEXTS[block.name].check_config(c, block, config)


def validate_finetune_config(config: Any, *, data: bool = True, command: str = "finetune") -> None:
    """A fine-tuning config (configs/finetune/); also what ``evaluate`` reads."""
    require_kind(config, "fine-tuning", command)
    validate_model_config(config.model)
    c = Checker(config)
    c.one_of("task", ("segmentation", "classification"))
    check_input_shape(c, config.model)
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
    try:
        augment_settings(config)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    c.check("eval.metrics", lambda v: bool(metric_names(config.task, v)), "must name metrics of the task's in "
            f"genesis_jax.evaluation.metric_table: {sorted(METRICS)}", optional=True)
    if data:
        validate_data_config(config.data)


def _network_task(name: Any) -> str | None:
    """'segmentation' or 'classification' as the network's spec declares it; None for an unknown name."""
    spec = MODELS.get(name) if isinstance(name, str) else None
    return None if spec is None else spec.task


def check_weights_for_task(config: Any, model_config: dict[str, Any], metadata: dict[str, Any], source: Any) -> None:
    """Refuse weights of another kind of network than ``config.task`` evaluates, before any scoring.

    Segmentation weights under a classification config (their score would be a meaningless AUC), a classifier under
    a segmentation config, a classifier with another number of classes, and restoration pre-training weights under a
    segmentation config (a Dice of 0: they were never trained on the target) each raise ConfigError naming ``source``.
    """
    task = get_field(config, "task")
    name = model_config.get("name")
    if task == "classification" and name is not None and _network_task(name) != "classification":
        raise ConfigError(f"{source}: these are {name} (segmentation) weights, but the config is a classification "
                          "task; give the weights of a classification fine-tuning run")
    if task == "segmentation" and _network_task(name) == "classification":
        raise ConfigError(f"{source}: these are classifier weights, but the config is a segmentation task")
    want = get_field(config, "model.num_classes")
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
    changed = [k for k in RESUME_SENSITIVE if k in saved and get_field(current, k) is not MISSING
               and saved[k] != get_field(current, k)]
    if changed:
        logging.getLogger("genesis_jax").warning(
            "%s: resuming with changed %s (checkpoint: %s; now: %s): the resumed run differs from an "
            "uninterrupted one", workdir, ", ".join(changed), ", ".join(f"{k}={saved[k]!r}" for k in changed),
            ", ".join(f"{k}={get_field(current, k)!r}" for k in changed))
    return changed
