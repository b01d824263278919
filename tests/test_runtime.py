"""XLA:CPU flags set by genesis_jax.runtime: when they are added, when they are left alone, and that XLA accepts them."""

import subprocess
import sys

import jax
import pytest

from genesis_jax import runtime

AVX512_CPUINFO = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512dq avx512bw\n"
AVX2_CPUINFO = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"


@pytest.fixture
def cpuinfo(tmp_path):
    def write(text: str):
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        return path

    return write


@pytest.fixture
def backends_not_started(monkeypatch):
    monkeypatch.setattr(runtime, "_backends_initialized", lambda: False)


def test_adds_the_flag_on_avx512_hosts_after_existing_flags(cpuinfo, backends_not_started):
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert runtime.prefer_wide_cpu_vectors(env, cpuinfo(AVX512_CPUINFO))
    assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {runtime.WIDE_VECTOR_FLAG}"
    empty: dict[str, str] = {}
    assert runtime.prefer_wide_cpu_vectors(empty, cpuinfo(AVX512_CPUINFO))
    assert empty["XLA_FLAGS"] == runtime.WIDE_VECTOR_FLAG


@pytest.mark.parametrize(
    "flags, text",
    [
        ("--xla_cpu_prefer_vector_width=256", AVX512_CPUINFO),  # the user's choice wins
        ("", AVX2_CPUINFO),  # no AVX-512
    ],
)
def test_leaves_xla_flags_alone(cpuinfo, backends_not_started, flags, text):
    env = {"XLA_FLAGS": flags}
    assert not runtime.prefer_wide_cpu_vectors(env, cpuinfo(text))
    assert env == {"XLA_FLAGS": flags}


def test_no_cpuinfo_means_no_avx512(tmp_path):
    assert not runtime.host_has_avx512(tmp_path / "missing")


def test_too_late_once_jax_has_started(cpuinfo):
    jax.devices()  # XLA has read XLA_FLAGS now
    assert runtime._backends_initialized()
    env: dict[str, str] = {}
    assert not runtime.prefer_wide_cpu_vectors(env, cpuinfo(AVX512_CPUINFO))
    assert env == {}


def test_xla_accepts_the_flag():
    # XLA aborts the process on a flag it does not know: a jax upgrade that dropped this one would break the command
    code = "import jax, jax.numpy as jnp; print(float(jax.jit(lambda x: (x * 2).sum())(jnp.arange(64.0))))"
    env = {"XLA_FLAGS": runtime.WIDE_VECTOR_FLAG, "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "4032.0"
