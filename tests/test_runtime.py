"""Process settings of genesis_jax.runtime: the XLA:CPU flags (when they are added, when they are left alone, and
that XLA accepts them) and the allocator setting that stops every step faulting its buffers in again."""

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
    assert runtime.cpu_isa(tmp_path / "missing") == "unknown"


@pytest.mark.parametrize("text, isa", [
    (AVX512_CPUINFO.replace("avx512bw", "avx512bw avx512_bf16 amx_bf16 amx_tile"), "AVX-512 + BF16 + AMX"),
    (AVX512_CPUINFO.replace("avx512bw", "avx512bw avx512_bf16"), "AVX-512 + BF16"),
    (AVX512_CPUINFO, "AVX-512"), (AVX2_CPUINFO, "AVX2"), (AVX2_CPUINFO.replace(" avx2", ""), "no AVX2"),
])
def test_cpu_isa_names_the_widest_instructions(cpuinfo, text, isa):
    assert runtime.cpu_isa(cpuinfo(text)) == isa


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


_FAULTS = """
import resource, sys, threading
import numpy as np
if sys.argv[1] == "reuse":
    from genesis_jax import runtime
    assert runtime.reuse_freed_host_memory({})
faults = []
def twice():  # what an XLA:CPU step does with its temporaries: allocate, write, free, again the next step
    for i in range(2):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = np.ones(50_000_000)  # 400 MB
        del block
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
twice()
worker = threading.Thread(target=twice)  # XLA runs steps on its own threads, which get arenas of their own
worker.start(); worker.join()
print(faults[1], faults[3])
"""


@pytest.mark.parametrize("setting", ["default", "reuse"])
def test_second_allocation_reuses_the_first_ones_pages(setting):
    done = subprocess.run([sys.executable, "-c", _FAULTS, setting], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 0, done.stderr
    main_thread, worker = (int(v) for v in done.stdout.split())
    # a fresh 400 MB mapping faults in at least 200 pages even with 2 MB transparent huge pages; reused: none
    if setting == "reuse":
        assert main_thread < 20 and worker < 20, done.stdout
    else:
        assert main_thread >= 100 and worker >= 100, done.stdout


def test_malloc_tunables_of_the_user_win_and_it_is_too_late_once_jax_has_started():
    assert not runtime.reuse_freed_host_memory({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"})
    jax.devices()
    assert not runtime.reuse_freed_host_memory({})


def test_will_run_on_cpu_follows_jax_platforms():
    assert runtime.will_run_on_cpu({"JAX_PLATFORMS": "cpu"})
    assert not runtime.will_run_on_cpu({"JAX_PLATFORMS": "cuda,cpu"})
    assert not runtime.will_run_on_cpu({"JAX_PLATFORMS": "tpu"})
