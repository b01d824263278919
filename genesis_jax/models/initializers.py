"""Named kernel initialisers, so configs can choose the scratch baselines of the published study by string."""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Initializer = Callable[..., jax.Array]


def _keras_uniform(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    # Keras' 'uniform' = RandomUniform(-0.05, 0.05): the "Random, uniform init" row of the results table.
    return jax.random.uniform(key, shape, dtype, -0.05, 0.05)


KERNEL_INITIALIZERS: dict[str, Initializer] = {
    # torch.nn.Conv default: kaiming_uniform(a=sqrt(5)) == U(+-sqrt(1/fan_in)).
    "pytorch": nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
    "uniform": _keras_uniform,
    "glorot_uniform": nn.initializers.glorot_uniform(),  # "Xavier"
    "he_uniform": nn.initializers.he_uniform(),  # "MSRA"
    "he_normal": nn.initializers.he_normal(),  # UNet++ reference
    # nnU-Net's InitWeights_He(1e-2): kaiming_normal_(a=0.01), untruncated, fan-in
    "nnunet": nn.initializers.variance_scaling(2.0 / (1 + 0.01**2), "fan_in", "normal"),
}


def kernel_initializer(name: str) -> Initializer:
    """Look up a kernel initialiser by name; raise a ValueError listing the choices for an unknown one."""
    try:
        return KERNEL_INITIALIZERS[name]
    except KeyError:
        raise ValueError(
            f"unknown kernel initialiser {name!r}; choose one of {sorted(KERNEL_INITIALIZERS)}"
        ) from None
