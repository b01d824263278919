"""Self-supervised restoration pre-training (Models Genesis): ``pretrain(config, workdir) -> summary``.

Each step takes a global batch of clean cubes sharded over the ``data`` mesh axis, deforms it ON THE DEVICE with the
restoration transforms (flip, local shuffle, Bezier intensity map, in/out-painting) inside the jitted step, and
trains the network to restore the original with MSE on its sigmoid output. Epochs of ``steps_per_epoch`` steps end
with a validation pass on transformed validation cubes (a fixed key, so epochs are comparable) that drives the
learning-rate schedule, early stopping and the best checkpoint.

The loop itself (resume, the periodic actions, schedule, early stopping, best checkpoint, the weights export) is
:mod:`genesis_jax.train.loop`'s; this module supplies the restoration task. Resume order: the workdir's latest
checkpoint, else ``config.init`` (a weights directory or another training workdir), else a random initialisation.
SIGTERM/SIGINT save a checkpoint and return with ``stopped='preempted'``; a non-finite loss or gradient stops with
:class:`~genesis_jax.train.loop.TrainingDiverged` and leaves the last good checkpoint in place.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from genesis_jax.data.pipeline import cube_source, global_batch, pretrain_dataset
from genesis_jax.models import build_model
from genesis_jax.train import checkpointing, precise_bn
from genesis_jax.train.config_checks import validate_pretrain_config
from genesis_jax.train.distributed import to_host
from genesis_jax.train.metrics_log import save_preview
from genesis_jax.train.loop import (  # noqa: F401  (TrainingDiverged, PreemptionGuard: importable from here too)
    PreemptionGuard,
    Task,
    TrainingDiverged,
    config_dict,
    locked,
    params_fingerprint,
    train,
)
from genesis_jax.train.mesh import batch_sharding, local_batch_size, make_mesh, resolve_batch_size
from genesis_jax.train.schedules import build_optimizer
from genesis_jax.train.losses import mse_loss
from genesis_jax.train.steps import make_eval_step, make_train_step

TransformFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def default_transform(transforms_config: Any, *, slice_2d: bool = False) -> TransformFn:
    """The published restoration deformations, run on the device (genesis_jax.transforms). With ``slice_2d`` they
    act on (B, X, Y, 1) slices as 2D images (``spatial_dims=2``): flips, shuffling windows and painting boxes are 2D,
    so an out-painted slice always keeps 1-5 windows of its own content."""
    from genesis_jax import transforms

    settings = transforms.settings_from_config(transforms_config or None)
    if slice_2d:
        if settings.spatial_dims == 3:
            raise ValueError("config.transforms.spatial_dims=3 contradicts config.slice_2d=True (Genesis 2D deforms "
                             "each 2D slice); leave it 0 or set 2")
        settings = dataclasses.replace(settings, spatial_dims=2)
    return functools.partial(transforms.restoration_batch, config=settings)


def make_restoration_prepare(transform: TransformFn, *, slice_2d: bool = False) -> Callable:
    """``prepare(key, batch)`` for the steps: deform ``batch['cube']``; with ``slice_2d`` (Genesis 2D) first take one
    random axial slice per sample, then deform the slices, giving (B, X, Y, 1) inputs and targets (``transform``
    then gets (B, X, Y, 1) slices: :func:`default_transform` with ``slice_2d=True`` deforms them in 2D)."""

    def prepare(key: jax.Array, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        transform_key, slice_key = jax.random.split(key)
        cubes = batch["cube"]
        if slice_2d:
            z = jax.random.randint(slice_key, (cubes.shape[0],), 0, cubes.shape[3])
            take = jax.vmap(lambda volume, i: jax.lax.dynamic_index_in_dim(volume, i, axis=2, keepdims=False))
            cubes = take(cubes, z)
        return transform(transform_key, cubes)

    return prepare


def _data_sources(config: ml_collections.ConfigDict, train_source: Any, val_source: Any) -> tuple[Any, Any]:
    """The train and validation cube sources: the given ones, else ``config.data``'s (genesis_jax.data)."""
    train = train_source if train_source is not None else cube_source(config.data, "train")
    val = val_source if val_source is not None else cube_source(config.data, "validation")
    return train, val


def _check_cube_shape(batch: Mapping[str, np.ndarray], config: ml_collections.ConfigDict) -> None:
    cube = tuple(batch["cube"].shape[1:-1])
    expected = tuple(config.input_shape[:-1])
    if (cube[:2] if config.get("slice_2d") else cube) != expected:
        raise ValueError(f"the data cubes are {cube} but config.input_shape is {tuple(config.input_shape)}; make "
                         "config.data.cubes.cube_shape and config.input_shape agree")


def pretrain(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    transform: TransformFn | None = None,
    train_source: Any = None,
    val_source: Any = None,
) -> dict[str, Any]:
    """Run (or resume) restoration pre-training as ``config`` describes, writing everything under ``workdir``.

    ``transform(key, cubes) -> (inputs, targets)`` replaces the published deformations (default:
    genesis_jax.transforms.restoration_batch with ``config.transforms``); ``train_source``/``val_source``
    (random-access sequences of (X, Y, Z) cubes or {"cube": ...} dicts) replace ``config.data``. Returns a summary dict.
    The workdir is locked for the run (:func:`genesis_jax.workdir.hold`): a second writer gets ``WorkdirBusy``.
    """
    validate_pretrain_config(config, data=train_source is None or val_source is None)
    workdir = Path(workdir).expanduser().resolve()
    started = time.time()
    with locked(workdir, "pretrain"):
        result = train(config, workdir, lambda resuming: _restoration_task(
            config, workdir, transform, train_source, val_source, resuming))
    task_spe = result.task.steps_per_epoch
    best_val = result.best["val_loss"]
    return {
        "workdir": str(workdir),
        "stopped": result.stopped,
        "step": result.step,
        "epoch": result.step // task_spe,
        "steps_per_epoch": task_spe,
        "resumed_from": result.resumed_from,
        "final_loss": result.last_loss if math.isfinite(result.last_loss) else None,  # None: no step ran (JSON)
        "best_val_loss": best_val if math.isfinite(best_val) else None,
        "best_step": result.best["step"],
        "global_batch_size": result.task.global_batch_size,
        "devices": jax.device_count(),
        "processes": jax.process_count(),
        "seconds": time.time() - started,
        "weights": str(result.weights) if result.weights else None,
        "preview": str(result.preview) if result.preview else None,
        "params_fingerprint": params_fingerprint(result.state.params),
    }


def _restoration_task(config: ml_collections.ConfigDict, workdir: Path, transform: TransformFn | None,
                      train_source: Any, val_source: Any, resuming: bool) -> Task:
    """The restoration task: MSE on deformed cubes, validation on a fixed transformed set, previews, precise-BN
    inputs from deformed training cubes."""
    primary = jax.process_index() == 0
    mesh = make_mesh(config.get("num_devices"))
    global_bs = resolve_batch_size(mesh, config.get("per_device_batch_size"), config.get("global_batch_size"))
    local_bs = local_batch_size(global_bs)
    model = build_model(config.model)
    tx = build_optimizer(**config_dict(config.optimizer))
    slice_2d = bool(config.get("slice_2d", False))
    prepare = make_restoration_prepare(transform or default_transform(config.get("transforms"), slice_2d=slice_2d),
                                       slice_2d=slice_2d)
    apply_kwargs = dict(config.get("apply_kwargs") or {})

    train_src, val_src = _data_sources(config, train_source, val_source)
    steps_per_epoch = int(config.get("steps_per_epoch") or max(1, len(train_src) // global_bs))
    num_val_batches = int(config.get("validation_batches") or len(val_src) // global_bs)
    if num_val_batches < 1 or num_val_batches * global_bs > len(val_src):
        raise ValueError(f"the validation set ({len(val_src)} cubes) does not fill config.validation_batches="
                         f"{num_val_batches or 1} global batch(es) of {global_bs}")
    train_iter = iter(pretrain_dataset(train_src, batch_size=local_bs, seed=config.seed))
    val_iter = iter(pretrain_dataset(val_src, batch_size=local_bs, seed=config.seed, shuffle=False, repeat=False))
    val_batches = [next(val_iter) for _ in range(num_val_batches)]
    _check_cube_shape(val_batches[0], config)
    sharding = batch_sharding(mesh)
    input_shape = tuple(config.input_shape)
    key = jax.random.key(config.seed, impl=config.get("prng_impl") or None)
    init_vars = None
    if config.get("init") and not resuming:
        init_vars, _, _ = checkpointing.load_init_weights(config.init)

    train_step = make_train_step(mse_loss, prepare, mesh=mesh, apply_kwargs=apply_kwargs,
                                 max_traces=config.get("max_step_traces"))
    eval_step = make_eval_step(mse_loss, prepare, apply_kwargs=apply_kwargs)
    val_key = jax.random.fold_in(key, 0x5EED)  # a fixed key: every epoch sees the same transformed cubes
    val_device = [global_batch(b, sharding) for b in val_batches]
    samples = config.logging.preview_samples

    def validate(state) -> dict[str, float]:
        losses = [eval_step(state, b, jax.random.fold_in(val_key, i)) for i, b in enumerate(val_device)]
        return {"val_loss": float(np.mean([float(m["loss"]) for m in losses]))}

    def preview(state, step: int, log) -> Path | None:
        out = eval_step(state, val_device[0], jax.random.fold_in(val_key, 0))
        arrays = [to_host(out[k])[:samples] for k in ("inputs", "predictions", "targets")]
        if not primary:
            return None
        path = workdir / "previews" / f"step_{step:07d}.png"
        log.image("restoration/input|prediction|target", save_preview(path, *arrays, max_rows=samples), step)
        return path

    def recalibrate(state, variables):
        """Precise BatchNorm statistics come from what the network trains on: deformed training cubes (an
        iterator of their own), through the compiled validation step's prepare."""
        def training_inputs(n: int):
            it = iter(pretrain_dataset(train_src, batch_size=local_bs, seed=config.seed + 2, prefetch=2))
            bn_key = jax.random.fold_in(key, 0xB4)
            return (eval_step(state, global_batch(next(it), sharding), jax.random.fold_in(bn_key, i))["inputs"]
                    for i in range(n))

        return precise_bn.recalibrate(model, variables, precise_bn.configured_num_batches(config), training_inputs,
                                      input_shape, **apply_kwargs)

    return Task(
        name="pretrain", model=model, model_config=config_dict(config.model), tx=tx, mesh=mesh, key=key,
        input_shape=input_shape, global_batch_size=global_bs, steps_per_epoch=steps_per_epoch,
        max_steps=int(config.get("max_steps") or config.max_epochs * steps_per_epoch), train_iter=train_iter,
        train_step=train_step, validate=validate, recalibrate=recalibrate, init_variables=init_vars,
        preview=preview, preview_every_steps=int(config.logging.preview_every_steps or 0),
    )
