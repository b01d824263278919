"""Wall-clock time of a network's forward pass (for accuracy/parameters/time comparisons such as UNet++ pruning).

The pass is jit-compiled and run once before timing (compilation excluded); each timed call waits for the result
(``block_until_ready``), and the median over ``repeats`` calls is returned, which is robust to a busy machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import numpy as np


def median_seconds(fn: Callable[..., Any], *args: Any, repeats: int = 5) -> float:
    """Median seconds of one ``fn(*args)`` call, waited for, after one warm-up call (which compiles a jitted fn)."""
    if repeats < 1:
        raise ValueError(f"median_seconds: repeats must be >= 1, got {repeats}")
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def forward_seconds(model: nn.Module, variables: Any, inputs: Any, repeats: int = 5, **call_kwargs: Any) -> float:
    """Median seconds of one ``model.apply(variables, inputs, **call_kwargs)`` call after a warm-up call."""
    if repeats < 1:
        raise ValueError(f"forward_seconds: repeats must be >= 1, got {repeats}")
    apply = jax.jit(lambda v, x: model.apply(v, x, **call_kwargs))
    return median_seconds(apply, variables, jax.device_put(inputs), repeats=repeats)
