"""Fwd+bwd time of ONE 3^3 convolution layer in each computed form: XLA's `native` 3D convolution, `depth_taps`
with XLA's own gradients of its 2D convolution, and `depth_taps` as the library computes it (kernel and input
gradients as one matmul each over the shifted cotangent, ``genesis_jax.models.layers._conv2d_same``). Forms timed in alternation, medians printed; the
gradients are checked against `native` first.

  taskset -c 1 env XLA_FLAGS="--xla_force_host_platform_device_count=1 --xla_cpu_multi_thread_eigen=false" \\
      python experiments/bench_conv_layer.py 192 64 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from genesis_jax.models import layers
from genesis_jax.runtime import tune_cpu_runtime


def native(a: jax.Array, b: jax.Array) -> jax.Array:
    """XLA's own 3D convolution, channels-last, stride 1, 'SAME'."""
    return jax.lax.conv_general_dilated(a, b, (1, 1, 1), "SAME", dimension_numbers=("NXYZC", "XYZIO", "NXYZC"))


def taps(a: jax.Array, b: jax.Array) -> jax.Array:
    """The library's depth-tap form of the same convolution."""
    return layers.depth_tap_conv(a, b, (1, 1, 1), "SAME")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cin", type=int)
    p.add_argument("cout", type=int)
    p.add_argument("--shape", default="2,64,64,32", help="N,X,Y,Z (default 2,64,64,32)")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    tune_cpu_runtime()  # as the genesis-jax command does: the allocator setting applies to PyTorch too
    n, sx, sy, sz = (int(v) for v in args.shape.split(","))
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (n, sx, sy, sz, args.cin))
    w = jax.random.normal(kw, (3, 3, 3, args.cin, args.cout)) * 0.05
    g = jax.random.normal(kg, (n, sx, sy, sz, args.cout))

    def compiled(f, xla_grads: bool = False):
        saved = layers._conv2d_same
        if xla_grads:  # trace with the plain lax convolution inside the depth-tap form
            layers._conv2d_same = layers._conv2d_same_xla
        try:
            return jax.jit(jax.grad(lambda a, b, c: jnp.sum(f(a, b) * c), (0, 1))).lower(x, w, g).compile()
        finally:
            layers._conv2d_same = saved

    forms = {"native": compiled(native), "depth_taps (XLA grads)": compiled(taps, True),
             "depth_taps (matmul grads)": compiled(taps)}
    ref = jax.block_until_ready(forms["native"](x, w, g))
    for name, f in forms.items():
        got = jax.block_until_ready(f(x, w, g))  # also the untimed warm-up round
        err = [float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) for a, b in zip(got, ref)]
        print(f"{name}: max relative error vs native  dx {err[0]:.1e}  dw {err[1]:.1e}")
    times: dict[str, list[float]] = {k: [] for k in forms}
    for _ in range(args.rounds):
        for name, f in forms.items():
            t = time.perf_counter()
            jax.block_until_ready(f(x, w, g))
            times[name].append(time.perf_counter() - t)
    print(f"{args.cin}->{args.cout}, {args.shape}, median of {args.rounds} (s): "
          + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in times.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
