"""How much compute Models Genesis pre-training needs, on which chip: XLA's cost of the library's own training step,
projected onto data-sheet figures of GPUs and TPUs (every projection is marked as one), and calibrated where a
step time was measured (this CPU).

Run (on any CPU host; 8 fake CPU devices for the sharded step; a few minutes on a 2-core CPU):
  python experiments/compute_plan.py                 # full sizes; writes experiments/results/compute_plan.md
  python experiments/compute_plan.py --quick         # Genesis U-Net (pytorch variant) only, no calibration run
Expected: the markdown report and, last, the line
  genesis_unet_pytorch_64x64x32_h100_bf16: <cubes/s> cubes/s (projection, <util>% utilisation)

What is measured here (XLA, compiled on this CPU, genesis_jax.train.cost): FLOPs and bytes accessed per step, the
backward's saved activations (jax.eval_shape) and the compiled step's buffers per device, the gradient all-reduce of
the step sharded over 8 devices (checked to be one reduction of the gradient), the all-gathers of the pre-training
transforms on a sharded batch. What is projected: step time on each chip = max(FLOPs / (utilisation x peak),
bytes / HBM bandwidth); data-parallel scaling efficiency from a ring all-reduce of the gradient over the in-node /
inter-node (GPU) or ICI (TPU) bandwidth, without overlap; chip-hours and cost of two published-scale runs.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from genesis_jax import transforms  # noqa: E402
from genesis_jax.transforms.batching import shard_samples_over  # noqa: E402
from genesis_jax.train.cost import StepCost, StepSpec, hlo_collectives, step_cost  # noqa: E402
from genesis_jax.train.mesh import batch_sharding, make_mesh, replicated  # noqa: E402

GB = 1e9
UTILISATION = 0.40  # stated assumption: 30-50% of peak is typical for 3D conv nets in mixed precision


@dataclasses.dataclass(frozen=True)
class Chip:
    """Data-sheet figures (per chip). Bandwidths in bytes/s per direction; ``node`` chips share the fast link."""

    peak_bf16: float  # dense FLOP/s
    peak_f32: float  # FLOP/s for float32 convolutions at full precision (see the note per chip)
    hbm: float
    link: float  # in-node (NVLink) or ICI bandwidth per chip, per direction
    node: int  # chips reachable over ``link`` (GPU: one HGX node; TPU: one pod/slice)
    network: float  # per chip, per direction, beyond ``node`` (GPU: InfiniBand NIC per GPU)
    price: float  # USD per chip-hour: an ASSUMED on-demand price, not a data-sheet figure
    sources: tuple[str, ...]
    note: str = ""


CHIPS: dict[str, Chip] = {
    "H100": Chip(989.4e12, 66.9e12, 3.35e12, 450 * GB, 8, 50 * GB, 3.00, (
        "https://www.nvidia.com/en-us/data-center/h100/",
        "https://docs.nvidia.com/dgx/dgxh100-user-guide/introduction-to-dgxh100.html"),
        "SXM5: BF16 dense 989.4 TFLOP/s (1,979 with sparsity), FP32 66.9; NVLink 900 GB/s total; 8x 400 Gb/s NICs"),
    "H200": Chip(989.4e12, 66.9e12, 4.8e12, 450 * GB, 8, 50 * GB, 3.50, (
        "https://www.nvidia.com/en-us/data-center/h200/",
        "https://docs.nvidia.com/dgx/dgxh100-user-guide/introduction-to-dgxh100.html"),
        "H100's compute with 141 GB HBM3e at 4.8 TB/s; NVLink 900 GB/s; NICs assumed as DGX H100"),
    "A100": Chip(312e12, 19.5e12, 2.039e12, 300 * GB, 8, 25 * GB, 1.80, (
        "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
        "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf",
        "https://docs.nvidia.com/dgx/dgxa100-user-guide/introduction-to-dgxa100.html"),
        "SXM4 80 GB: BF16 dense 312 TFLOP/s, FP32 19.5; NVLink 600 GB/s total; 8x 200 Gb/s NICs"),
    "TPU v5e": Chip(197e12, 197e12 / 6, 819e9, 200 * GB, 256, 200 * GB, 1.20, (
        "https://cloud.google.com/tpu/docs/v5e", "https://cloud.google.com/tpu/pricing"),
        "bf16 197 TFLOP/s, HBM 819 GB/s, ICI 400 GB/s bidirectional; pod 256 chips"),
    "TPU v5p": Chip(459e12, 459e12 / 6, 2765e9, 600 * GB, 8960, 600 * GB, 4.20, (
        "https://cloud.google.com/tpu/docs/v5p", "https://cloud.google.com/tpu/pricing"),
        "bf16 459 TFLOP/s, HBM 2,765 GB/s, ICI 1,200 GB/s bidirectional; pod 8,960 chips"),
    "TPU v6e": Chip(918e12, 918e12 / 6, 1640e9, 400 * GB, 256, 400 * GB, 2.70, (
        "https://cloud.google.com/tpu/docs/v6e", "https://cloud.google.com/tpu/pricing"),
        "bf16 918 TFLOP/s, HBM 1,640 GB/s, ICI 800 GB/s bidirectional; pod 256 chips"),
}
F32_NOTE = ("float32 peaks: GPUs' FP32 (CUDA-core) figure; TPUs list no float32 peak: a float32 convolution at "
            "precision HIGHEST runs as 6 bf16 MXU passes, so bf16 peak / 6 (JAX's default precision would use TF32 "
            "on GPUs and one bf16 pass on TPUs: faster, less exact)")

# The Models Genesis pre-training (reference: /work/shared/reference/models_genesis.md): LUNA16 subsets 0-4 (445
# scans) train, 5-6 (178) validate, 32 cubes of 64x64x32 per scan, batch 6, an epoch = N_train // 6 steps plus a
# validation pass; the epoch count is NOT published (early stopping, patience 50, upper bound 10,000).
GENESIS_TRAIN_CUBES = 445 * 32
GENESIS_VAL_CUBES = 178 * 32
GENESIS_EPOCHS = 100  # ASSUMED for the cost line; the report also gives the per-epoch figure
# nnssl (MIC-DKFZ/nnssl, nnssl/training/nnsslTrainer/masked_image_modeling/BaseMAETrainer.py): BaseMAETrainer_BS8_1000ep
# trains ResEnc-L on 160^3 patches, total batch 8, 1,000 epochs; 250 iterations per epoch is nnU-Net's default
# (nnUNetTrainer.num_iterations_per_epoch), assumed to carry over.
NNSSL_STEPS, NNSSL_BATCH, NNSSL_PATCH = 1000 * 250, 8, (160, 160, 160)
# ResEnc-L (nnU-Net residual encoder preset L, as nnssl builds it): 6 stages, strides 1,2,2,2,2,2, 3^3 kernels.
RESENC_L = dict(features=(32, 64, 128, 256, 320, 320), blocks=(1, 3, 4, 6, 6, 6), decoder_convs=1)

NETWORKS = {
    "genesis_unet_pytorch": ({"name": "genesis_unet", "variant": "pytorch"}, "pretrain"),
    "genesis_unet_pytorch (fine-tuning step)": ({"name": "genesis_unet", "variant": "pytorch"}, "segmentation"),
    "genesis_unet_keras": ({"name": "genesis_unet", "variant": "keras"}, "pretrain"),
    "unetpp_3d": ({"name": "unetpp", "ndim": 3, "deep_supervision": True}, "segmentation"),
}
CUBE = (64, 64, 32, 1)
PER_CHIP_BATCH = 6  # the published batch, per chip


def resenc_l_training_flops(patch: tuple[int, int, int], features=RESENC_L["features"], blocks=RESENC_L["blocks"]
                            ) -> float:
    """HAND COUNT (no ResEnc network in this library yet): FLOPs of one training sample of ResEnc-L as nnssl builds
    it: a 3^3 stem conv (1 -> 32), per stage ``blocks`` residual blocks of two 3^3 convs (the first of each stage
    strided, its skip a 1^3 conv when the width changes), a decoder of one 2x transposed conv (kernel 2) and one
    3^3 conv per stage on [up, skip], a 1^3 output conv. Training = 3 x forward multiply-adds (forward, input and
    kernel gradients), 2 FLOPs per multiply-add; norms and activations are left out."""
    def voxels(stage: int) -> float:
        return float(math.prod(s // 2**stage for s in patch))

    macs = voxels(0) * 27 * 1 * features[0]  # stem
    previous = features[0]
    for s, (f, n) in enumerate(zip(features, blocks)):
        v = voxels(s)
        for b in range(n):
            macs += v * 27 * (previous if b == 0 else f) * f + v * 27 * f * f
            if b == 0 and previous != f:
                macs += v * previous * f  # 1^3 projection on the skip
            previous = f
    for s in reversed(range(len(features) - 1)):
        v = voxels(s)
        macs += voxels(s + 1) * 8 * features[s + 1] * features[s]  # transposed conv, kernel 2 stride 2
        macs += v * 27 * 2 * features[s] * features[s]  # conv on [up, skip]
    macs += voxels(0) * features[0] * 1  # reconstruction head
    return 2.0 * 3.0 * macs


def step_time(flops: float, bytes_accessed: float, chip: Chip, dtype: str, util: float) -> float:
    """PROJECTION: seconds per step: compute at ``util`` of peak, never faster than the HBM traffic allows."""
    peak = chip.peak_bf16 if dtype == "bfloat16" else chip.peak_f32
    return max(flops / (util * peak), bytes_accessed / chip.hbm)


def all_reduce_seconds(gradient_bytes: float, chips: int, chip: Chip) -> float:
    """PROJECTION: a ring all-reduce moves 2 (n-1)/n of the gradient over each chip's slowest link."""
    if chips <= 1:
        return 0.0
    bandwidth = chip.link if chips <= chip.node else chip.network
    return 2.0 * (chips - 1) / chips * gradient_bytes / bandwidth


def restoration_all_gather_bytes(per_device_batch: int, mesh) -> int:
    """All-gather bytes per device of restoration_batch on a batch sharded over ``mesh`` (full cube size), traced
    as the train step traces it (under ``shard_samples_over(mesh)``: each device deforms its own samples)."""
    n = mesh.devices.size
    key = jax.random.key_data(jax.random.key(0))

    def deform(raw, cubes):
        with shard_samples_over(mesh):
            return transforms.restoration_batch(jax.random.wrap_key_data(raw), cubes)

    jitted = jax.jit(deform, in_shardings=(replicated(mesh), batch_sharding(mesh)),
                     out_shardings=(batch_sharding(mesh), batch_sharding(mesh)))
    compiled = jitted.lower(jax.ShapeDtypeStruct(key.shape, key.dtype),
                            jax.ShapeDtypeStruct((per_device_batch * n, *CUBE), jnp.float32)).compile()
    return sum(c.bytes for c in hlo_collectives(compiled.as_text()) if c.kind == "all-gather")


def cpu_matmul_peak(size: int = 1024, repeats: int = 20) -> float:
    """FLOP/s of a float32 matmul on ONE core of this CPU (a subprocess pinned with taskset where available, XLA
    single-threaded), the peak the CPU calibration divides by."""
    code = (
        "import time, jax, jax.numpy as jnp\n"
        f"n = {size}\n"
        "a = jnp.ones((n, n), jnp.float32); f = jax.jit(lambda x: x @ x)\n"
        "f(a).block_until_ready(); best = 1e9\n"
        f"for _ in range({repeats}):\n"
        "    t = time.perf_counter(); f(a).block_until_ready(); best = min(best, time.perf_counter() - t)\n"
        "print(2 * n**3 / best)\n"
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1 --xla_cpu_multi_thread_eigen=false"}
    prefix = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    out = subprocess.run([*prefix, sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def measure_step_here(config: str) -> float | None:
    """ms of our step (bench_step.py, no PyTorch, one core) for ``config`` 'width:x,y,z:batch' on this machine."""
    out = Path("/tmp/compute_plan_bench_step.md")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1 --xla_cpu_multi_thread_eigen=false"}
    prefix = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    cmd = [*prefix, sys.executable, str(REPO / "experiments" / "bench_step.py"), "--configs", config, "--dtypes",
           "float32", "--no-torch", "--rounds", "3", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0 or not out.exists():
        print(f"bench_step failed ({proc.returncode}): {proc.stderr[-500:]}")
        return None
    row = next(line for line in out.read_text().splitlines() if re.match(r"\|\s*Genesis U-Net, width \d+\s*\|", line))
    return float(row.split("|")[5])


# Committed bench_step figures (ms of OUR step, auto conv form), with where they came from.
COMMITTED_STEPS = [
    (32, (64, 64, 32), 2, 21848, "bench_step_cpu.md: idle 2-core AMD EPYC (AVX2), one core"),
    (4, (32, 32, 16), 2, 131, "bench_step_cpu_grid.md: idle AMD EPYC (AVX2), one core"),
    (4, (64, 64, 32), 2, 989, "bench_step_cpu_grid.md: idle AMD EPYC (AVX2), one core"),
    (4, (64, 64, 32), 6, 2929, "bench_step_cpu_grid.md: idle AMD EPYC (AVX2), one core"),
    (32, (32, 32, 16), 2, 3556, "bench_step_cpu_grid.md: idle AMD EPYC (AVX2), one core"),
]


def fmt(x: float, digits: int = 3) -> str:
    return f"{x:,.{digits}g}" if abs(x) < 10 ** digits else f"{x:,.0f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the Genesis U-Net pytorch variant only; no CPU step run")
    p.add_argument("--util", type=float, default=UTILISATION, help="assumed fraction of peak FLOP/s (default 0.4)")
    p.add_argument("--out", default=str(REPO / "experiments" / "results" / "compute_plan.md"))
    args = p.parse_args()
    started = time.time()
    networks = {k: v for k, v in NETWORKS.items() if not args.quick or k == "genesis_unet_pytorch"}
    one, eight = make_mesh(1), make_mesh(8)

    costs: dict[tuple[str, str], StepCost] = {}
    gradients: dict[str, int] = {}
    gradient_of_model: dict[str, int] = {}
    for name, (model, task) in networks.items():
        # the gradient all-reduce does not depend on the cube: a small cube (16^3 pools 4 times) on 8 devices,
        # checked to be one reduction of the gradient
        key = repr(sorted(model.items()))
        if key not in gradient_of_model:
            small = StepSpec(model, (16, 16, 16, 1), 8, "segmentation")
            gradient_of_model[key] = step_cost(small, eight).all_reduce_bytes
        gradients[name] = gradient_of_model[key]
    for name, (model, task) in networks.items():
        for dtype in ("float32", "bfloat16"):
            spec = StepSpec({**model, "dtype": dtype}, CUBE, PER_CHIP_BATCH, task)
            t = time.time()
            costs[name, dtype] = step_cost(spec, one)
            print(f"{name} {dtype}: {costs[name, dtype].flops_per_sample / 1e12:.3f} TFLOP/cube "
                  f"({time.time() - t:.0f} s)", flush=True)
    gather = restoration_all_gather_bytes(PER_CHIP_BATCH, eight)

    lines = [
        "# Compute plan: what one training step costs, and projections onto GPUs and TPUs",
        "",
        f"Command: `python experiments/compute_plan.py{' --quick' if args.quick else ''}` (jax {jax.__version__}, "
        f"costs compiled with XLA:CPU on 8 fake devices; {time.time() - started:.0f} s so far).",
        "",
        "**Everything in the projection tables is a PROJECTION** from XLA's cost analysis and vendors' data sheets; "
        "no GPU or TPU has measured it. Costs are for XLA's native convolutions (what `conv_impl='auto'` lowers "
        "on GPU and TPU); bytes accessed come from XLA:CPU's fused program (a GPU/TPU compile fuses differently, so "
        "the memory bound is indicative).",
        "",
        "## Cost per step (measured from XLA, per device)",
        "",
        f"Per-chip batch {PER_CHIP_BATCH} cubes of {CUBE[0]}x{CUBE[1]}x{CUBE[2]}; pre-training = the on-device "
        "restoration transforms + MSE + SGD; UNet++ = the segmentation fine-tuning step (dice, Adam, deep "
        "supervision). Saved activations: the backward's residuals (`jax.eval_shape`); buffers: the compiled "
        "step's arguments + temporaries on XLA:CPU. Gradient all-reduce: from the step sharded over 8 devices, "
        "checked to be one reduction of the gradient (float32) plus the BatchNorm statistics.",
        "",
        "| network | dtype | TFLOP / cube | GB accessed / cube | saved activations GiB | step buffers GiB | "
        "parameters | gradient all-reduce MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (name, dtype), c in costs.items():
        lines.append(f"| {name} | {dtype} | {c.flops_per_sample / 1e12:.3f} | {c.bytes_per_sample / GB:.2f} | "
                     f"{c.residual_bytes / 2**30:.2f} | {c.peak_bytes / 2**30:.2f} | {c.param_bytes // 4:,} | "
                     f"{gradients[name] / 1e6:.1f} |")
    lines += [
        "",
        f"Pre-training transforms on a sharded batch: `restoration_batch` on {PER_CHIP_BATCH} cubes per device over "
        f"8 devices, traced as the train step traces it (each device deforms its own samples, "
        f"`transforms.batching.per_device`), all-gathers **{gather / 1e6:.1f} MB per device per step** (10.8 MB "
        "before the deformations ran per device: XLA's partitioner gathered the batch's scatter indices and "
        "updates onto every device); `tests/train/test_cost.py::test_sharded_pretraining_step_has_no_all_gather` "
        "keeps it so.",
        "",
        "## Chips (data sheets)",
        "",
        "| chip | bf16 TFLOP/s | f32 TFLOP/s | HBM GB/s | link GB/s/dir | chips on link | beyond GB/s/dir | "
        "assumed $/chip-h | sources |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for chip_name, chip in CHIPS.items():
        lines.append(f"| {chip_name} | {chip.peak_bf16 / 1e12:.1f} | {chip.peak_f32 / 1e12:.1f} | "
                     f"{chip.hbm / GB:,.0f} | {chip.link / GB:.0f} | {chip.node:,} | {chip.network / GB:.0f} | "
                     f"{chip.price:.2f} | {' '.join(chip.sources)} |")
    lines += ["", f"Notes: {'; '.join(f'{k}: {c.note}' for k, c in CHIPS.items())}. {F32_NOTE}. Prices are ASSUMED "
              "on-demand list prices (TPU: Google's pricing page at the time of writing; GPU: typical cloud rates), "
              "not data-sheet figures; scale the cost columns by your own.", ""]

    util = args.util
    lines += [
        f"## Projection: one chip (PROJECTION, {util:.0%} of peak FLOP/s)",
        "",
        "Step time = max(FLOPs / (utilisation x peak), bytes accessed / HBM bandwidth); compute-bound = FLOPs / "
        "peak, memory-bound = bytes / HBM bandwidth (both at 100%).",
        "",
        "| network | dtype | chip | compute-bound ms | memory-bound ms | projected step ms | cubes/s per chip | "
        "bound | cubes/s if compute-bound |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    projected: dict[tuple[str, str, str], float] = {}
    for (name, dtype), c in costs.items():
        for chip_name, chip in CHIPS.items():
            peak = chip.peak_bf16 if dtype == "bfloat16" else chip.peak_f32
            t = step_time(c.flops, c.bytes_accessed, chip, dtype, util)
            projected[name, dtype, chip_name] = PER_CHIP_BATCH / t
            compute = c.flops / (util * peak)
            bound = "compute" if compute >= c.bytes_accessed / chip.hbm else "memory"
            lines.append(f"| {name} | {dtype} | {chip_name} | {c.flops / peak * 1e3:.2f} | "
                         f"{c.bytes_accessed / chip.hbm * 1e3:.2f} | {t * 1e3:.2f} | {PER_CHIP_BATCH / t:,.0f} | "
                         f"{bound} | {PER_CHIP_BATCH / compute:,.0f} |")

    lines += [
        "",
        f"## Projection: data-parallel scaling (PROJECTION, bfloat16, {util:.0%} utilisation, batch "
        f"{PER_CHIP_BATCH} per chip)",
        "",
        "Efficiency = step / (step + gradient all-reduce), the all-reduce a ring over the chips' slowest link "
        "(GPU: NVLink within 8, the per-GPU NIC beyond; TPU: ICI), not overlapped with the backward pass (a lower "
        "bound: XLA overlaps part of it)" + (", the transforms' all-gather above not counted." if gather else "."),
        "",
        "| network | chip | 8 chips | 64 chips | 256 chips |",
        "|---|---|---|---|---|",
    ]
    for name in networks:
        c = costs[name, "bfloat16"]
        for chip_name, chip in CHIPS.items():
            t = step_time(c.flops, c.bytes_accessed, chip, "bfloat16", util)
            eff = [t / (t + all_reduce_seconds(gradients[name], n, chip)) for n in (8, 64, 256)]
            lines.append(f"| {name} | {chip_name} | " + " | ".join(f"{e:.0%}" for e in eff) + " |")

    c = costs["genesis_unet_pytorch", "bfloat16"]
    train_flops = GENESIS_TRAIN_CUBES * c.flops_per_sample
    val_flops = GENESIS_VAL_CUBES * c.flops_per_sample / 3  # forward only: about a third of a training step
    resenc = resenc_l_training_flops(NNSSL_PATCH)
    nnssl_flops = NNSSL_STEPS * NNSSL_BATCH * resenc
    lines += [
        "",
        f"## Projection: whole runs (PROJECTION, bfloat16, {util:.0%} utilisation; Genesis at the step time above, "
        "nnssl compute-bound: there is no byte count for a hand-counted network)",
        "",
        f"Models Genesis (pytorch variant): {GENESIS_TRAIN_CUBES:,} training cubes (445 scans x 32) and "
        f"{GENESIS_VAL_CUBES:,} validation cubes (178 x 32, forward only, counted as a third of a training step) "
        f"per epoch: {(train_flops + val_flops) / 1e15:.2f} PFLOP per epoch. The epoch count is not published "
        f"(early stopping, patience 50); the run line ASSUMES {GENESIS_EPOCHS} epochs.",
        f"nnssl-scale: ResEnc-L on {NNSSL_PATCH[0]}^3, batch {NNSSL_BATCH}, {NNSSL_STEPS:,} steps (1,000 epochs x "
        f"250): {resenc / 1e12:.2f} TFLOP per sample by HAND COUNT (no residual-encoder network in this library "
        "yet; convolutions only), "
        f"{nnssl_flops / 1e18:.1f} EFLOP in all.",
        "",
        "| chip | Genesis: chip-hours / epoch | Genesis: chip-hours, "
        f"{GENESIS_EPOCHS} epochs | Genesis: cost | nnssl ResEnc-L: chip-hours | nnssl: cost |",
        "|---|---|---|---|---|---|",
    ]
    for chip_name, chip in CHIPS.items():
        t_cube = step_time(c.flops, c.bytes_accessed, chip, "bfloat16", util) / PER_CHIP_BATCH
        epoch_h = (GENESIS_TRAIN_CUBES + GENESIS_VAL_CUBES / 3) * t_cube / 3600
        nnssl_h = nnssl_flops / (util * chip.peak_bf16) / 3600
        lines.append(f"| {chip_name} | {epoch_h:.3f} | {epoch_h * GENESIS_EPOCHS:.1f} | "
                     f"${epoch_h * GENESIS_EPOCHS * chip.price:,.0f} | {nnssl_h:,.0f} | ${nnssl_h * chip.price:,.0f} |")

    if not args.quick:
        lines += calibration_section(costs, one)

    headline_cubes = projected["genesis_unet_pytorch", "bfloat16", "H100"]
    lines += ["", "The headline below is the pre-training step's projection on one H100 in bfloat16 at the stated "
              "utilisation, bounded by XLA:CPU's bytes accessed where that is slower (see the 'bound' column); "
              "the fine-tuning row of the same network shows what the on-device restoration transforms add."]
    headline = (f"genesis_unet_pytorch_64x64x32_h100_bf16: {headline_cubes:,.0f} cubes/s (projection, "
                f"{util * 100:.0f}% utilisation)")
    lines += ["", headline, ""]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out} ({time.time() - started:.0f} s)")
    print(headline)
    return 0


def calibration_section(costs: dict, mesh) -> list[str]:
    """The same model on this CPU: predicted step time at its measured one-core matmul peak vs measured steps."""
    peak = cpu_matmul_peak()
    lines = [
        "",
        "## Calibration on CPU (the model against measured steps)",
        "",
        f"This CPU's peak: {peak / 1e9:.1f} GFLOP/s, a 1024^2 float32 matmul on one core (XLA single-threaded, "
        "best of 20), measured by this command while other work was running on the machine (it was loaded). "
        "Predicted = the step's XLA FLOPs (native form, the library's fine-tuning step of the Genesis U-Net pytorch "
        "variant at that width and size: the same convolutions as bench_step's step) / that peak, i.e. 100% "
        "utilisation; ratio = measured / predicted (how far from peak the CPU step runs).",
        "",
        "| width | cube | batch | predicted ms | measured ms | measured / predicted | where the measurement came from |",
        "|---|---|---|---|---|---|---|",
    ]
    per_sample: dict[tuple[int, tuple[int, int, int]], float] = {}

    def flops(width: int, cube: tuple[int, int, int], batch: int) -> float:
        if (width, cube) not in per_sample:
            spec = StepSpec({"name": "genesis_unet", "variant": "pytorch", "base_width": width}, (*cube, 1), 2,
                            "segmentation")
            per_sample[width, cube] = step_cost(spec, mesh).flops_per_sample
        return per_sample[width, cube] * batch

    rows = [(w, c, b, ms, src) for w, c, b, ms, src in COMMITTED_STEPS]
    here = measure_step_here("4:32,32,16:2")
    if here is not None:
        rows.append((4, (32, 32, 16), 2, here, "this command, this machine (Intel Xeon), one core, LOADED"))
    for width, cube, batch, ms, source in rows:
        predicted = flops(width, cube, batch) / peak * 1e3
        lines.append(f"| {width} | {'x'.join(map(str, cube))} | {batch} | {predicted:,.0f} | {ms:,.0f} | "
                     f"{ms / predicted:.1f}x | {source} |")
    lines += ["", "The committed figures were measured on another machine (an AMD EPYC) than the peak (this "
              "machine): their ratios mix two CPUs; the last row is one machine, measured under load."]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
