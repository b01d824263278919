"""Process-level settings of the XLA runtime that this library's kernels want: owns XLA:CPU code generation flags.

XLA:CPU emits 256-bit vector code by default, also on CPUs with AVX-512 (wider vectors can lower the clock of some
older Intel chips). The restoration transforms are integer-hash heavy and gain from 512-bit vectors on the AVX-512
development machine (``experiments/bench_transforms.py`` with and without ``--xla-default-vector-width``; figures in
the README's performance section). The ``genesis-jax`` command and the benchmarks in ``experiments/`` call
``prefer_wide_cpu_vectors()`` first; code that imports the library can do the same before its first JAX
computation, or set ``XLA_FLAGS`` itself.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

WIDE_VECTOR_FLAG = "--xla_cpu_prefer_vector_width=512"
_CPUINFO = Path("/proc/cpuinfo")


def host_has_avx512(cpuinfo: Path = _CPUINFO) -> bool:
    """Whether the host CPU reports the AVX-512 foundation instructions (Linux ``/proc/cpuinfo``; else False)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    return any(line.startswith("flags") and "avx512f" in line.split() for line in text.splitlines())


def _backends_initialized() -> bool:
    try:
        from jax._src import xla_bridge  # private: the one place that knows whether XLA_FLAGS was read already

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return False


def prefer_wide_cpu_vectors(env: MutableMapping[str, str] | None = None, cpuinfo: Path = _CPUINFO) -> bool:
    """Add ``--xla_cpu_prefer_vector_width=512`` to ``XLA_FLAGS`` on AVX-512 hosts; True when it did.

    Leaves ``XLA_FLAGS`` alone when it names a vector width already (the user's choice wins), when the CPU has no
    AVX-512, or when JAX has initialised its backends (XLA reads the flags once, at that point: too late then).
    Only XLA:CPU reads the flag; GPU and TPU runs are unaffected.
    """
    env = os.environ if env is None else env
    flags = env.get("XLA_FLAGS", "")
    if "xla_cpu_prefer_vector_width" in flags or not host_has_avx512(cpuinfo) or _backends_initialized():
        return False
    env["XLA_FLAGS"] = f"{flags} {WIDE_VECTOR_FLAG}".strip()
    return True
