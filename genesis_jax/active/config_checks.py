"""Checks of an active-learning config (configs/active/), on top of :mod:`genesis_jax.config_checks`; the
selection methods and learner strategies come from the tables ``selection`` and ``learner`` dispatch on."""

from __future__ import annotations

from typing import Any

from genesis_jax.active.learner import STRATEGIES
from genesis_jax.active.selection import METHODS
from genesis_jax.config_checks import Checker, check_divisible, require_kind, validate_model_config


def validate_active_config(config: Any) -> None:
    """An active-learning config (configs/active/): network, pool, patches, selection, learner."""
    require_kind(config, "active-learning", "al")
    validate_model_config(config.model)
    c = Checker(config)
    c.int_at_least("pool.n", 1)
    c.int_at_least("pool.context_size", 1)
    c.fraction("pool.positive_fraction")
    c.shape("patches.patch_shape", 3)
    check_divisible(c, "patches.patch_shape", config.model)
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
