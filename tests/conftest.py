"""Shared test setup: 8 fake CPU devices (set before JAX is imported) and small helpers."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import pytest  # noqa: E402

# XLA:CPU compiles threefry key derivations very slowly (a tiny U-Net's jitted init: ~16 s with threefry, ~2 s with
# rbg on this 2-core machine). Tests only need reproducible, well-mixed keys, so they use rbg.
jax.config.update("jax_default_prng_impl", "rbg")


@pytest.fixture
def key():
    return jax.random.key(0)
