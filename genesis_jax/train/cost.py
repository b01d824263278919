"""What one training step costs, read from XLA rather than estimated: the library's own jitted, sharded train step
(pre-training or fine-tuning, built by :func:`~genesis_jax.train.steps.make_train_step` with the task's prepare,
loss and optimiser) for a network config, cube size, global batch and dtype, as

- FLOPs and bytes accessed from XLA's cost analysis of the compiled step (per device);
- memory per device: the residuals the backward pass keeps (``jax.eval_shape`` of the VJP, independent of any
  backend) and the compiled step's buffers (``memory_analysis()`` of the compiled executable);
- the collectives of the sharded step, from its partitioned HLO: a data-parallel step holds the gradient
  all-reduce(s), exactly the gradient's size, plus the small BatchNorm/loss reductions over the global batch, and
  no all-gather, all-to-all or reduce-scatter (:func:`check_data_parallel_collectives`);
- and the same step exported with ``jax.export`` for other platforms (``export_step``), which is how a CPU host
  proves that the step lowers for TPU and CUDA.

Cost figures are for the form a GPU/TPU runs: ``conv_impl='auto'`` lowers XLA's native convolutions there, so
:func:`step_cost` compiles the step with ``conv_impl='native'`` on the CPU unless the config says otherwise.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from genesis_jax.models import build_model, contract
from genesis_jax.pretext.genesis import default_transform, make_prepare as make_restoration_prepare
from genesis_jax.transforms.augment import AugmentSettings
from genesis_jax.train.finetune_steps import make_finetune_optimizer, make_prepare
from genesis_jax.train.losses import get_loss, mse_loss
from genesis_jax.train.mesh import batch_sharding
from genesis_jax.train.schedules import build_optimizer
from genesis_jax.train.state import abstract_train_state
from genesis_jax.train.steps import make_train_step
from genesis_jax.train.transfer import parameter_groups

TASKS: tuple[str, ...] = ("pretrain", "segmentation", "classification")
# Collectives a data-parallel step must not contain: each one means some array was not kept sharded or replicated.
FORBIDDEN_COLLECTIVES: tuple[str, ...] = ("all-gather", "all-to-all", "reduce-scatter", "collective-permute")
_HLO_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4,
              "s64": 8, "u64": 8, "f64": 8}


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """One training step to cost: ``model`` is a ``config.model`` dict, ``input_shape`` one sample (X, Y, Z, C),
    ``global_batch`` the samples per step over the whole mesh, ``task`` 'pretrain' (Models Genesis restoration:
    the on-device deformations, MSE, SGD) or a fine-tuning task ('segmentation': dice, 'classification': BCE;
    Adam with the transfer groups; with ``augment``, the training step's device augmentation too)."""

    model: Mapping[str, Any]
    input_shape: tuple[int, ...]
    global_batch: int
    task: str = "pretrain"
    augment: AugmentSettings | None = None  # fine-tuning: the device augmentation inside the step

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {self.task!r}")

    @property
    def name(self) -> str:
        cfg = self.model
        parts = [str(cfg["name"])] + [str(cfg[k]) for k in ("variant",) if k in cfg]
        size = "x".join(str(s) for s in self.input_shape[:-1])
        return "_".join([*parts, size, f"b{self.global_batch}", str(cfg.get("dtype") or "float32"), self.task])


def _batch_shapes(spec: StepSpec) -> dict[str, tuple[tuple[int, ...], Any]]:
    b, shape = spec.global_batch, tuple(spec.input_shape)
    if spec.task == "pretrain":
        return {"cube": ((b, *shape), jnp.float32)}
    label = (b, 1) if spec.task == "classification" else (b, *shape[:-1], 1)
    return {"image": ((b, *shape), jnp.float32), "label": (label, jnp.float32)}


def build_step(spec: StepSpec, mesh: Mesh) -> tuple[Callable, tuple[Any, Any]]:
    """(the jitted train step the library trains this task with, its abstract (state, batch) arguments: the state
    replicated and the batch split over ``mesh``'s data axis, as ShapeDtypeStructs: nothing is allocated)."""
    model_config = dict(spec.model)
    model = build_model(model_config)
    key = jax.random.key(0)
    if spec.task == "pretrain":
        tx = build_optimizer("sgd", 1.0, momentum=0.9)
        step = make_train_step(mse_loss, make_restoration_prepare(default_transform(None)), mesh=mesh)
    else:
        params = jax.eval_shape(lambda: model.init({"params": key, "dropout": key},
                                                   jnp.zeros((1, *spec.input_shape)), train=False))["params"]
        tx = make_finetune_optimizer({"name": "adam", "learning_rate": 1e-3}, parameter_groups(params, set()), 1.0)
        loss = get_loss("dice" if spec.task == "segmentation" else "bce")
        prepare = make_prepare(spec.task, int(model_config.get("ndim", 3)), spec.augment)
        step = make_train_step(loss, prepare, mesh=mesh, apply_kwargs=contract(model_config).deep_supervision)
    state = abstract_train_state(model, tx, key, tuple(spec.input_shape), mesh)
    sharding = batch_sharding(mesh)
    batch = {k: jax.ShapeDtypeStruct(s, d, sharding=sharding) for k, (s, d) in _batch_shapes(spec).items()}
    return step, (state, batch)


def export_step(spec: StepSpec, mesh: Mesh, platforms: Sequence[str]) -> jax.export.Exported:
    """The train step exported with ``jax.export`` for ``platforms`` (e.g. ('tpu',), ('cuda',)) on ``mesh``."""
    step, args = build_step(spec, mesh)
    return jax.export.export(step, platforms=tuple(platforms))(*args)


@dataclasses.dataclass(frozen=True)
class Collective:
    kind: str  # 'all-reduce', 'all-gather', ...
    bytes: int  # the result's size on one device


def hlo_collectives(hlo_text: str) -> list[Collective]:
    """Every cross-device collective in an (optimised, partitioned) HLO module's text, with its result size; the
    asynchronous start/done pairs count once (at the start, whose result holds the operand and the result)."""
    out = []
    pattern = re.compile(r"=\s*(\(?[^=]*?\)?)\s+(all-reduce|all-gather|all-to-all|reduce-scatter|"
                         r"collective-permute)(-start)?\(")
    for line in hlo_text.splitlines():
        m = pattern.search(re.sub(r"/\*.*?\*/", "", line))  # tuple shapes carry /*index=5*/ comments
        if not m:
            continue
        shapes = re.findall(r"(\w+)\[([\d,]*)\]", m.group(1))
        sizes = [_HLO_BYTES.get(t, 4) * math.prod(int(d) for d in dims.split(",") if d) for t, dims in shapes]
        if m.group(3) and m.group(2) != "all-reduce" and len(sizes) > 1:
            sizes = sizes[len(sizes) // 2:]  # async (operands, results): count the results
        out.append(Collective(m.group(2), int(sum(sizes))))
    return out


def tree_bytes(tree: Any) -> int:
    return int(sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def check_data_parallel_collectives(collectives: Sequence[Collective], gradient_bytes: int,
                                    small_bytes: int) -> int:
    """The all-reduce bytes of a data-parallel step, after checking that it is exactly one reduction of the
    gradient: no all-gather (or other re-layout collective), and all-reduces totalling the gradient's size plus at
    most ``small_bytes`` (the per-channel BatchNorm statistics and scalar metrics reduced over the global batch).
    Raises a ValueError naming what was found otherwise."""
    bad = [c for c in collectives if c.kind in FORBIDDEN_COLLECTIVES]
    if bad:
        raise ValueError(f"the sharded step holds {len(bad)} collective(s) a data-parallel step should not: "
                         f"{sorted({c.kind for c in bad})} ({sum(c.bytes for c in bad):,} bytes); some array was "
                         "re-laid out across devices")
    total = sum(c.bytes for c in collectives if c.kind == "all-reduce")
    if not gradient_bytes <= total <= gradient_bytes + small_bytes:
        raise ValueError(f"the step all-reduces {total:,} bytes; one gradient reduction is {gradient_bytes:,} bytes "
                         f"(+ at most {small_bytes:,} of statistics)")
    return total


def _batchnorm_channels(params: Any) -> int:
    """Channels normalised by BatchNorm layers (their 'scale' parameters), for the statistics' reductions."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return sum(int(x.shape[-1]) for path, x in flat if str(getattr(path[-1], "key", "")) == "scale")


def residual_bytes(spec: StepSpec) -> int:
    """Bytes the backward pass keeps from the forward (the VJP's residuals, parameters excluded) for the WHOLE
    batch, from ``jax.eval_shape``: the activation memory any backend must hold without rematerialisation."""
    model = build_model(dict(spec.model))
    x = jax.ShapeDtypeStruct((spec.global_batch, *spec.input_shape), jnp.float32)
    key = jax.random.key(0)
    sample = jnp.zeros((1, *spec.input_shape))
    variables = jax.eval_shape(lambda: model.init({"params": key, "dropout": key}, sample, train=False))
    kwargs = (contract(dict(spec.model)).deep_supervision if spec.task != "pretrain" else None) or {}

    def residuals(variables, inputs):
        def forward(params):
            out, _ = model.apply({**variables, "params": params}, inputs, train=True, mutable=["batch_stats"],
                                 rngs={"dropout": key}, **kwargs)
            return out

        return jax.vjp(forward, variables["params"])[1]

    vjp_fn = jax.eval_shape(residuals, variables, x)
    params_bytes = tree_bytes(variables["params"])
    return max(0, tree_bytes(vjp_fn) - params_bytes)


@dataclasses.dataclass(frozen=True)
class StepCost:
    """The costs of one step of ``spec`` on ``devices`` devices (per-device figures: each device runs the
    partitioned program on global_batch / devices samples)."""

    spec: StepSpec
    devices: int
    flops: float  # per device, XLA cost analysis of the compiled step
    bytes_accessed: float  # per device, idem
    residual_bytes: int  # per device: the backward's saved activations (eval_shape), batch share
    temp_bytes: int  # per device: the compiled step's temporary buffers (memory_analysis)
    argument_bytes: int  # per device: state + batch shard
    param_bytes: int  # the gradient's size (float32 parameters)
    all_reduce_bytes: int  # per device, the sharded step's all-reduces (0 on one device)

    @property
    def samples_per_device(self) -> float:
        return self.spec.global_batch / self.devices

    @property
    def flops_per_sample(self) -> float:
        return self.flops / self.samples_per_device

    @property
    def bytes_per_sample(self) -> float:
        return self.bytes_accessed / self.samples_per_device

    @property
    def peak_bytes(self) -> int:
        """Arguments + temporaries of the compiled step on one device (the donated state is updated in place)."""
        return self.argument_bytes + self.temp_bytes


def _native(model: Mapping[str, Any]) -> dict[str, Any]:
    cfg = dict(model)
    cfg.setdefault("conv_impl", "native")  # what conv_impl='auto' lowers on GPU and TPU
    return cfg


def step_cost(spec: StepSpec, mesh: Mesh, *, check_collectives: bool = True) -> StepCost:
    """Compile the step of ``spec`` on ``mesh`` (this host's devices, e.g. 8 fake CPU devices) and read its costs.
    With more than one device the partitioned HLO's collectives are checked to be one gradient all-reduce."""
    spec = dataclasses.replace(spec, model=_native(spec.model))
    step, (state, batch) = build_step(spec, mesh)
    compiled = step.lower(state, batch).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    memory = compiled.memory_analysis()
    n = mesh.devices.size
    param_bytes = tree_bytes(state.params)
    all_reduce = 0
    if n > 1:
        collectives = hlo_collectives(compiled.as_text())
        if check_collectives:
            # BatchNorm: mean and variance forward, two per-channel sums backward, float32; metrics: a few scalars
            small = 4 * 4 * _batchnorm_channels(state.params) + 4 * 64
            all_reduce = check_data_parallel_collectives(collectives, param_bytes, small)
        else:
            all_reduce = sum(c.bytes for c in collectives if c.kind == "all-reduce")
    return StepCost(
        spec=spec, devices=n, flops=float(analysis.get("flops", 0.0)),
        bytes_accessed=float(analysis.get("bytes accessed", 0.0)),
        residual_bytes=int(residual_bytes(spec) / n), temp_bytes=int(memory.temp_size_in_bytes),
        argument_bytes=int(memory.argument_size_in_bytes), param_bytes=param_bytes, all_reduce_bytes=all_reduce,
    )


def describe(cost: StepCost) -> str:
    """The figures of ``cost`` as the lines ``genesis-jax summary --cost`` prints."""
    s = cost.spec
    return "\n".join([
        f"Training step ({s.task}{', augmented on the device' if s.augment else ''}, global batch {s.global_batch}, "
        f"{s.model.get('dtype') or 'float32'}, "
        f"conv_impl {s.model.get('conv_impl')}, {cost.devices} device(s)), XLA's cost analysis of the compiled step:",
        f"  FLOPs per sample:            {cost.flops_per_sample:,.0f} ({cost.flops_per_sample / 1e12:.3f} TFLOP)",
        f"  bytes accessed per sample:   {cost.bytes_per_sample:,.0f}",
        f"  saved activations / device:  {cost.residual_bytes:,} bytes (the backward's residuals, jax.eval_shape)",
        f"  step buffers / device:       {cost.peak_bytes:,} bytes (arguments + temporaries, this backend)",
        f"  gradient (float32):          {cost.param_bytes:,} bytes",
    ])
