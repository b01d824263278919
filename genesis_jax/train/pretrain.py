"""Self-supervised pre-training: ``pretrain(config, workdir) -> summary`` runs the pretext ``config.pretext.name``
picks (:mod:`genesis_jax.pretext`: Models Genesis restoration, masked image modelling, both; a config without a
``pretext`` block is Genesis restoration).

Each step takes a global batch of clean cubes sharded over the ``data`` mesh axis; the pretext's ``prepare`` turns
it into inputs and targets ON THE DEVICE inside the jitted step (deformations, slices, masks) and its loss scores
the network's output. Epochs of ``steps_per_epoch`` steps end with a validation pass on prepared validation cubes (a
fixed key, so epochs are comparable) that drives the learning-rate schedule, early stopping and the best
checkpoint, and reports the restoration quality gate's figures (:mod:`genesis_jax.pretext.gate`): the scored MSE,
the batch-mean and per-image-mean predictors' MSE on the same batches, and the identity MSE on clean inputs. The
exported ``weights/`` and ``summary.json`` record the gate measured on the exported variables.

A pretext's own trainable parameters (``Pretext.params``: a learned mask token) are the task's parameters
(``Task.task_params``): the train step updates them with the network's optimiser, the checkpoints carry them, the
evaluation steps (validation, gate, previews, precise-BN inputs) use the state's current values, and ``weights/``
holds the network alone; ``summary.json`` records their fingerprint (``pretext_params_fingerprint``).

The loop itself (resume, the periodic actions, schedule, early stopping, best checkpoint, the weights export) is
:mod:`genesis_jax.train.loop`'s; this module knows no pretext by name. Resume order: the workdir's latest
checkpoint, else ``config.init`` (a weights directory or another training workdir), else a random initialisation.
SIGTERM/SIGINT save a checkpoint and return with ``stopped='preempted'``; a non-finite loss or gradient stops with
:class:`~genesis_jax.train.loop.TrainingDiverged` and leaves the last good checkpoint in place.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from genesis_jax.data.pipeline import cube_source, global_batch, pretrain_dataset
from genesis_jax.models import build_model
from genesis_jax.pretext import Pretext, build_pretext
from genesis_jax.pretext.gate import FIGURES, RECORD_KEY, batch_figures, gate_record
from genesis_jax.train import checkpointing, precise_bn
from genesis_jax.train.config_checks import validate_pretrain_config
from genesis_jax.train.distributed import to_host
from genesis_jax.train.ema import params_ema
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
from genesis_jax.train.steps import make_eval_step, make_train_step

SUMMARY_FILE = "summary.json"


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
    transform: Any = None,
    train_source: Any = None,
    val_source: Any = None,
) -> dict[str, Any]:
    """Run (or resume) pre-training on the pretext ``config.pretext.name`` picks, writing everything under ``workdir``.

    ``transform(key, cubes) -> (inputs, targets)`` replaces the published deformations of the pretexts that use
    them (default: genesis_jax.transforms.restoration_batch with ``config.transforms``); ``train_source``/
    ``val_source`` (random-access sequences of (X, Y, Z) cubes or {"cube": ...} dicts) replace ``config.data``.
    Returns a summary dict, also written to ``workdir/summary.json``. The workdir is locked for the run
    (:func:`genesis_jax.workdir.hold`): a second writer gets ``WorkdirBusy``.
    """
    validate_pretrain_config(config, data=train_source is None or val_source is None)
    workdir = Path(workdir).expanduser().resolve()
    started = time.time()
    with locked(workdir, "pretrain"):
        result = train(config, workdir, lambda resuming: _pretext_task(
            config, workdir, transform, train_source, val_source, resuming))
    task_spe = result.task.steps_per_epoch
    best_val = result.best["val_loss"]
    summary = {
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
        # the pretext's own trained parameters (a learned mask token): checkpointed, never exported
        **({"pretext_params_fingerprint": params_fingerprint(result.state.task_params)}
           if result.state.task_params else {}),
        **(result.record or {}),  # the pretext and the quality gate of the exported weights
    }
    if jax.process_index() == 0:
        (workdir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=float))
    return summary


def _scored_mean(outputs: list[Mapping[str, jax.Array]], key: str) -> float:
    return float(np.mean([float(o[key]) for o in outputs]))


def _pretext_task(config: ml_collections.ConfigDict, workdir: Path, transform: Any, train_source: Any,
                  val_source: Any, resuming: bool) -> Task:
    """The pretext's task: its loss on prepared cubes, validation (loss and quality-gate figures) on a fixed
    prepared set, titled previews with a clean-input row, precise-BN inputs from prepared training cubes, and the
    gate of the exported variables in weights/metadata.json."""
    primary = jax.process_index() == 0
    mesh = make_mesh(config.get("num_devices"))
    global_bs = resolve_batch_size(mesh, config.get("per_device_batch_size"), config.get("global_batch_size"))
    local_bs = local_batch_size(global_bs)
    model = build_model(config.model)
    ema_decay = float(config.get("ema_decay") or 0.0)  # the average is last in the chain: it sees the new params
    tx = build_optimizer(**config_dict(config.optimizer), then=params_ema(ema_decay) if ema_decay else None)
    pretext: Pretext = build_pretext(config, transform)
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

    def figures(predictions: jax.Array, targets: Any) -> dict[str, jax.Array]:
        return batch_figures(predictions, *pretext.scored(targets))

    train_step = make_train_step(pretext.loss, pretext.prepare, mesh=mesh, apply_kwargs=apply_kwargs,
                                 max_traces=config.get("max_step_traces"))
    eval_step = make_eval_step(pretext.loss, pretext.prepare, apply_kwargs=apply_kwargs, metrics=figures)
    clean_step = make_eval_step(pretext.loss, pretext.clean, apply_kwargs=apply_kwargs, metrics=figures)
    val_key = jax.random.fold_in(key, 0x5EED)  # a fixed key: every epoch sees the same prepared cubes
    val_device = [global_batch(b, sharding) for b in val_batches]
    samples = config.logging.preview_samples

    def gate_figures(state) -> tuple[float, dict[str, float]]:
        """(validation loss, the gate's figures) over the validation batches."""
        outs = [eval_step(state, b, jax.random.fold_in(val_key, i)) for i, b in enumerate(val_device)]
        clean = [clean_step(state, b, jax.random.fold_in(val_key, i)) for i, b in enumerate(val_device)]
        values = {k: _scored_mean(outs, k) for k in FIGURES[:3]}
        values["clean_identity_mse"] = _scored_mean(clean, "restoration_mse")
        return _scored_mean(outs, "loss"), values

    def validate(state) -> dict[str, float]:
        val_loss, values = gate_figures(state)
        passed = gate_record(values, pretext.gate, pretext.scored_voxels)["passed"]
        return {"val_loss": val_loss, **{f"val_{k}": v for k, v in values.items()}, "val_gate_passed": float(passed)}

    def export_record(state, variables) -> dict[str, Any]:
        """The gate measured on exactly the exported variables (best or final, BatchNorm re-estimated)."""
        def placed(host: Any, like: Any) -> Any:  # on the state's (replicated) shardings, every process alike
            return jax.tree.map(lambda h, x: jax.device_put(h, x.sharding), host, like)

        exported = state.replace(params=placed(variables["params"], state.params),
                                 batch_stats=placed(variables.get("batch_stats") or {}, state.batch_stats))
        record = gate_record(gate_figures(exported)[1], pretext.gate, pretext.scored_voxels)
        return {"pretext": pretext.name, RECORD_KEY: record}

    def preview(state, step: int, log) -> Path | None:
        out = eval_step(state, val_device[0], jax.random.fold_in(val_key, 0))
        clean = clean_step(state, val_device[0], jax.random.fold_in(val_key, 0))
        columns = [np.asarray(a)[:samples] for a in pretext.preview_panels(
            *(jax.tree.map(to_host, out[k]) for k in ("inputs", "predictions", "targets")))]
        clean_row = [np.asarray(a)[0] for a in pretext.preview_panels(
            *(jax.tree.map(to_host, clean[k]) for k in ("inputs", "predictions", "targets")))]
        if not primary:
            return None
        path = workdir / "previews" / f"step_{step:07d}.png"
        grid = save_preview(path, columns, titles=pretext.preview_columns, clean_row=clean_row, max_rows=samples)
        log.image(f"{pretext.name}/" + "|".join(pretext.preview_columns), grid, step)
        return path

    def recalibrate(state, variables):
        """Precise BatchNorm statistics come from what the network trains on: prepared training cubes (an
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
        task_params=pretext.params,
        preview=preview, preview_every_steps=int(config.logging.preview_every_steps or 0),
        export_record=export_record,
    )
