"""Process-level settings of the XLA runtime that this library's kernels want: owns XLA:CPU code generation flags
and the host allocator's behaviour for XLA:CPU's per-step buffers (``tune_cpu_runtime`` applies both), and what the
host has to offer (``available_host_memory``: the limit that size checks before allocating compare with).

XLA:CPU emits 256-bit vector code by default, also on CPUs with AVX-512 (wider vectors can lower the clock of some
older Intel chips). The restoration transforms are integer-hash heavy and gain from 512-bit vectors on the AVX-512
development machine (``experiments/bench_transforms.py`` with and without ``--xla-default-vector-width``; figures in
the README's performance section). The ``genesis-jax`` command and the benchmarks in ``experiments/`` call
``prefer_wide_cpu_vectors()`` first; code that imports the library can do the same before its first JAX
computation, or set ``XLA_FLAGS`` itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import os
import pkgutil
from collections.abc import Mapping, MutableMapping
from pathlib import Path

WIDE_VECTOR_FLAG = "--xla_cpu_prefer_vector_width=512"
_CPUINFO = Path("/proc/cpuinfo")


def available_host_memory() -> int:
    """Bytes of memory available to a new allocation now: MemAvailable of /proc/meminfo (Linux), else the physical
    memory, else no limit (2**63)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**63


def _cpu_flags(cpuinfo: Path) -> set[str]:
    """The first processor's ``flags`` of Linux ``/proc/cpuinfo`` (empty when unreadable)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")), set())


def host_has_avx512(cpuinfo: Path = _CPUINFO) -> bool:
    """Whether the host CPU reports the AVX-512 foundation instructions (Linux ``/proc/cpuinfo``; else False)."""
    return "avx512f" in _cpu_flags(cpuinfo)


def cpu_isa(cpuinfo: Path = _CPUINFO) -> str:
    """The host CPU's widest vector and matrix instructions, as benchmark tables name them: 'AVX-512 + BF16 + AMX',
    'AVX-512 + BF16', 'AVX-512', 'AVX2' or 'no AVX2' (x86 flags of ``/proc/cpuinfo``; 'unknown' when unreadable)."""
    flags = _cpu_flags(cpuinfo)
    if not flags:
        return "unknown"
    if "avx512f" not in flags:
        return "AVX2" if "avx2" in flags else "no AVX2"
    extras = [name for flag, name in (("avx512_bf16", "BF16"), ("amx_tile", "AMX")) if flag in flags]
    return " + ".join(["AVX-512", *extras])


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


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def will_run_on_cpu(env: Mapping[str, str] | None = None) -> bool:
    """Whether JAX will compute on the CPU: ``JAX_PLATFORMS`` says 'cpu', or no GPU/TPU plugin is installed
    (answered without starting a backend, which would be too late for the settings here)."""
    env = os.environ if env is None else env
    platforms = env.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    if importlib.util.find_spec("libtpu") is not None:
        return False
    if importlib.metadata.entry_points(group="jax_plugins"):
        return False
    try:
        import jax_plugins  # the namespace package JAX scans for accelerator plugins
    except ImportError:
        return True
    return next(pkgutil.iter_modules(jax_plugins.__path__), None) is None


def reuse_freed_host_memory(env: Mapping[str, str] | None = None) -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the kernel; True when it did.

    XLA:CPU allocates a training step's temporaries (gigabytes for the full-size 3D U-Net) afresh at every
    execution, from its worker threads. glibc serves each block over 32 MB with its own ``mmap`` (and a thread's
    arena maps big blocks too) and unmaps it on free, so every step faults all of that memory in again: about
    5 s of kernel time per step of the width-32 U-Net at 64x64x32, batch 2, on the 2-core development machine.
    One arena, no ``mmap`` for large blocks and no trimming make the second step reuse the first one's pages
    (``experiments/results/bench_step_cpu.md``). The process keeps its peak heap for its lifetime, which is what
    a training run holds anyway.

    Left alone when ``GLIBC_TUNABLES`` sets malloc tunables (the user's choice wins), when the C library is not
    glibc, or when JAX has started its backends (their threads own arenas already).
    """
    env = os.environ if env is None else env
    if "glibc.malloc" in env.get("GLIBC_TUNABLES", "") or _backends_initialized():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # only glibc has mallopt with these parameters
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # -1 as the trim threshold is SIZE_MAX inside glibc: never trim (an int cannot say more than 2 GB otherwise)
    done = [mallopt(_M_ARENA_MAX, 1), mallopt(_M_MMAP_MAX, 0), mallopt(_M_TRIM_THRESHOLD, -1)]
    return all(r == 1 for r in done)


def tune_cpu_runtime(reuse_memory: bool = True) -> dict[str, bool]:
    """The process settings for XLA:CPU, before the first JAX computation: wide vectors on AVX-512 hosts and, when
    JAX will run on the CPU (and ``reuse_memory``), the allocator behaviour of ``reuse_freed_host_memory``. Returns
    what was applied."""
    return {"wide_vectors": prefer_wide_cpu_vectors(),
            "reuse_freed_host_memory": reuse_memory and will_run_on_cpu() and reuse_freed_host_memory()}
