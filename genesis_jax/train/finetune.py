"""``finetune(config, workdir) -> summary``: fine-tune a network for a target task from Genesis weights or scratch.

The published recipe (Models Genesis §5): Adam, the task's loss (Dice for segmentation, BCE for classification),
a validation pass every epoch whose loss drives ReduceLROnPlateau (0.5 / 6 / 1e-4 / 1e-6) and early stopping (the
task's patience), and the best-by-validation weights kept; these are then evaluated on the test set: whole volumes
by sliding window (Dice, IoU, HD95, the published mean IoU) or crops / candidates (mean IoU, AUC).

Training batches are augmented on the device inside the jitted step (``config.augment``,
:mod:`genesis_jax.transforms.augment`; on for segmentation). With ``config.ema_decay`` > 0 the optimiser keeps a
moving average of the parameters (:mod:`genesis_jax.train.ema`) and validation, ``best/``, ``weights/`` and the test
evaluation use it (``summary.json['evaluated']['parameters']`` says which parameters were evaluated).

The loop is pre-training's (:mod:`genesis_jax.train.loop`); this module supplies the target task. The batch is
sharded over the ``data`` mesh axis, the grain iterator position is checkpointed with the train state (also after
every validation), SIGTERM/SIGINT save and return (``stopped='preempted'``), a non-finite loss stops with
:class:`~genesis_jax.train.loop.TrainingDiverged` keeping the last good checkpoint, and rerunning the same
command resumes. Initialisation order: the workdir's latest checkpoint, else ``config.init.checkpoint`` (a weights
directory or a training workdir, transferred by :mod:`genesis_jax.train.transfer`), else scratch.

Workdir: ``config.json``, ``transfer_report.json``, ``checkpoints/`` and ``best/`` (orbax), ``metrics.csv``,
``validation.csv``, ``metrics.jsonl``, ``tensorboard/``, ``weights/`` (the evaluated weights as a weights directory,
usable as ``--init``, by ``genesis-jax evaluate`` and by ``genesis-jax predict``: for segmentation its metadata.json
records the spacing, normalisation and window predict reads new scans with), ``predictions/`` (overlay PNGs,
optional NIfTI) and ``summary.json``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from genesis_jax.data.pipeline import finetune_dataset, global_batch
from genesis_jax.evaluation.evaluate import export_predictions
from genesis_jax.evaluation.metric_table import Collected, compute_metrics, metric_names
from genesis_jax.evaluation.metrics import MultiClassAccumulator
from genesis_jax.evaluation.predict import InferenceSettings
from genesis_jax.evaluation.test_set import evaluate_test_set
from genesis_jax.models import build_model, contract
from genesis_jax.models.weights import CheckpointError, init_adaptation_record
from genesis_jax.pretext.gate import INIT_RECORD_KEY, init_record
from genesis_jax.train import checkpointing, precise_bn
from genesis_jax.train.config_checks import validate_finetune_config
from genesis_jax.train.distributed import to_host
from genesis_jax.data.task_data import TaskData, flip_transform, label_subset, load_task_data
from genesis_jax.train.finetune_steps import augment_settings, make_eval_step, make_finetune_optimizer, make_prepare
from genesis_jax.train.losses import get_loss
from genesis_jax.train.loop import Task, locked, params_fingerprint, train
from genesis_jax.train.mesh import batch_sharding, local_batch_size, make_mesh, resolve_batch_size
from genesis_jax.train.steps import make_train_step
from genesis_jax.train.transfer import (
    count_group_sizes,
    parameter_groups,
    scratch_model_config,
    transfer_variables,
)

log = logging.getLogger(__name__)
SCRATCH = ("", "scratch", None)


def is_scratch(init: str | None) -> bool:
    return init in SCRATCH


def model_config_for_run(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """``config.model`` as a plain dict, with the scratch initialiser applied when the run starts from scratch."""
    cfg = config.model.to_dict()
    if is_scratch(config.init.checkpoint):
        cfg = scratch_model_config(cfg, config.init.scratch_init)
    return cfg


def _patch_shape(config: ml_collections.ConfigDict, data: TaskData) -> tuple[int, ...] | None:
    """The patch the pipeline cuts: the network's input, with a slice axis of 1 for a 2D network on volumes."""
    if data.patch_shape is None:
        return None
    shape = tuple(int(s) for s in config.input_shape[:-1])
    return (*shape, 1) if len(shape) == 2 else shape


def _validation_batches(config, data: TaskData, patch_shape, local_bs: int, global_bs: int) -> list[dict]:
    """A fixed validation set: ``sampling.validation_patches`` patches drawn once from the validation volumes, or
    every full batch of the validation crops."""
    s = config.sampling
    common = dict(batch_size=local_bs, seed=int(config.seed) + 1, shuffle=False, transform=None)
    if patch_shape is not None:
        it = iter(finetune_dataset(data.validation, patch_shape=patch_shape, foreground_fraction=s.foreground_fraction,
                                   patches_per_volume=s.patches_per_volume, repeat=True, **common))
        return [next(it) for _ in range(max(1, math.ceil(s.validation_patches / global_bs)))]
    if len(data.validation) < global_bs:
        raise ValueError(f"the validation split has {len(data.validation)} examples, fewer than one global batch "
                         f"({global_bs}); lower config.global_batch_size")
    return list(finetune_dataset(data.validation, repeat=False, **common))


def _precise_bn(config, model, train_source, patch_shape, local_bs: int, sharding):
    """``recalibrate(variables)``: ``variables`` with BatchNorm statistics re-estimated on
    ``config.precise_bn.num_batches`` batches of the TRAINING images (:mod:`genesis_jax.train.precise_bn`; the
    same seeded batches every call; patches uniform over the volumes, as the sliding window sees them, so no label
    is read), or unchanged when that is 0 or the network has no running averages. Its own iterator: the
    checkpointed training one is not advanced."""
    n = precise_bn.configured_num_batches(config)
    ndim = int(config.model.get("ndim", 3))

    def network_input(x: jax.Array) -> jax.Array:  # a 2D network reads (B, X, Y, 1, C) patches as (B, X, Y, C)
        return x[:, :, :, 0] if ndim == 2 and x.ndim == 5 else x

    def images(count: int):
        it = iter(finetune_dataset(train_source, batch_size=local_bs, seed=int(config.seed) + 2, patch_shape=patch_shape,
                                   foreground_fraction=0.0, patches_per_volume=config.sampling.patches_per_volume,
                                   shard_index=jax.process_index(), shard_count=jax.process_count(), prefetch=2))
        return (global_batch({"image": next(it)["image"]}, sharding)["image"] for _ in range(count))

    return lambda variables: precise_bn.recalibrate(model, variables, n, images, tuple(config.input_shape),
                                                    prepare=network_input)


def _validate(eval_step, state, batches, task: str, metrics: tuple[str, ...] | None = None,
              accumulator: Any = None) -> dict[str, float]:
    """Validation loss (mean over batches, as Keras' evaluate with equal batches) and the metrics of
    :mod:`genesis_jax.evaluation.metric_table` (``config.eval.metrics``; default: the task's), or, for a softmax
    network, its per-class ``accumulator`` (:class:`~genesis_jax.evaluation.metrics.MultiClassAccumulator`)."""
    losses, collected = [], Collected()
    if accumulator is not None:
        add = accumulator.update
    else:
        add = collected.add_segmentation if task == "segmentation" else collected.add_classification
    for batch in batches:
        loss, prediction, targets = eval_step(state, batch)
        losses.append(float(loss))
        add(to_host(targets), to_host(prediction))
    out = {"val_loss": float(np.mean(losses))}
    scores = accumulator.result() if accumulator is not None else \
        compute_metrics(metrics or metric_names(task), collected)
    out.update({f"val_{k}": v for k, v in scores.items()})
    return out


def _initial_variables(config, model, model_config: dict[str, Any], key, input_shape) -> tuple[Any, dict, set[str]]:
    """(variables or None for a random init, the transfer report, the transferred parameter paths)."""
    init = config.init.checkpoint
    if is_scratch(init):
        report = {"source": f"scratch ({config.init.scratch_init})", "loaded": [], "fresh": ["all"], "unused": []}
        return None, report, set()
    source, source_config, meta = checkpointing.load_init_weights(init)
    source_record, record_origin = init_adaptation_record(init, source_config)
    init_key, _ = jax.random.split(key)  # the key create_train_state initialises with
    sample = jnp.zeros((1, *input_shape), jnp.float32)
    fresh = jax.jit(lambda: model.init({"params": init_key, "dropout": init_key}, sample, train=False))()
    fresh = {"params": fresh["params"], "batch_stats": fresh.get("batch_stats", {})}
    name = f"{init} ({meta['source']})" if meta.get("source") else str(init)
    variables, rep = transfer_variables(jax.device_get(fresh), source, config.task, config.init.keep_head, name,
                                        target_record=contract(model_config).adaptation_record(),
                                        source_record=source_record, strict=bool(config.init.get("strict", False)))
    rep.log(log)
    report = {**rep.as_dict(), "source_model_config": source_config, "source_record": source_record.as_dict(),
              "source_record_from": record_origin}
    return variables, report, rep.loaded_params()


def _num_devices(config: ml_collections.ConfigDict) -> int | None:
    """``config.num_devices``; unset in a single process, the most devices the global batch divides over (a
    fine-tuning batch of 2 or 16 need not match the device count)."""
    if config.get("num_devices") or jax.process_count() > 1 or not config.get("global_batch_size"):
        return config.get("num_devices")
    batch = int(config.global_batch_size)
    return max(d for d in range(1, jax.device_count() + 1) if batch % d == 0)


def _transferred_from_report(workdir: Path) -> set[str]:
    path = workdir / "transfer_report.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; it records which parameters were transferred, which "
                                            "the optimiser groups of a resumed run need")
    loaded = json.loads(path.read_text())["loaded"]
    return {p.split("/", 1)[1] for p in loaded if p.startswith("params/")}


def finetune(config: ml_collections.ConfigDict, workdir: str | Path, data: TaskData | None = None) -> dict[str, Any]:
    """Run (or resume) fine-tuning as ``config`` describes, writing everything under ``workdir``; returns the
    summary (also in ``workdir/summary.json``). ``data`` replaces ``config.data`` (tests and studies pass it).
    The workdir is locked for the run (:func:`genesis_jax.workdir.hold`): a second writer gets ``WorkdirBusy``."""
    validate_finetune_config(config, data=data is None)
    workdir = Path(workdir).expanduser().resolve()
    with locked(workdir, "finetune"):
        return _finetune(config, workdir, data)


def _finetune(config: ml_collections.ConfigDict, workdir: Path, data: TaskData | None) -> dict[str, Any]:
    primary = jax.process_index() == 0
    started = time.time()
    if primary:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    data = load_task_data(config) if data is None else data
    train_source = label_subset(data.train, float(config.label_fraction), int(config.sampling.subset_seed))
    model_config = model_config_for_run(config)
    result = train(config, workdir, lambda resuming: _target_task(config, workdir, data, train_source, model_config,
                                                                  resuming))
    summary: dict[str, Any] = {
        "workdir": str(workdir), "stopped": result.stopped, "step": result.step, "epochs": len(result.history),
        "resumed_from": result.resumed_from, "init": "scratch" if is_scratch(config.init.checkpoint) else
        str(config.init.checkpoint), "label_fraction": float(config.label_fraction),
        "train_examples": len(train_source), "best": result.best, "history": result.history,
        "global_batch_size": result.task.global_batch_size, "devices": jax.device_count(),
        "params_fingerprint": params_fingerprint(result.state.params),
    }
    if result.weights is not None:
        summary["weights"] = str(result.weights)
        summary["evaluated"] = result.source
        export = config.task == "segmentation" and (config.eval.save_predictions or config.eval.overlays)
        test = evaluate_test_set(config, model_config, result.variables, data, keep_probabilities=export)
        if export and "probabilities" in test:
            probabilities = test.pop("probabilities")
            if primary:
                export_predictions(probabilities, data.test_volumes, workdir / "predictions",
                                   nifti=config.eval.save_predictions, overlays=config.eval.overlays,
                                   threshold=config.eval.threshold,
                                   overlay_class=test.get("overlay_class"))
        summary["test"] = test
    summary["seconds"] = time.time() - started
    if primary:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


def _target_task(config: ml_collections.ConfigDict, workdir: Path, data: TaskData, train_source: Any,
                 model_config: dict[str, Any], resuming: bool) -> Task:
    """The target task: its loss on labelled patches or crops, validation metrics (Dice/IoU or AUC) with
    re-estimated BatchNorm statistics, the transfer parameter groups, and precise-BN inputs from training images."""
    primary = jax.process_index() == 0
    mesh = make_mesh(_num_devices(config))
    global_bs = resolve_batch_size(mesh, config.get("per_device_batch_size"), config.get("global_batch_size"))
    local_bs = local_batch_size(global_bs)
    patch_shape = _patch_shape(config, data)
    num_classes = int(model_config.get("num_classes", 1))
    if config.task == "segmentation" and num_classes != 1 and model_config.get("head_activation") != "softmax":
        raise ValueError(f"config.model.num_classes={num_classes}: a multi-class segmentation network needs "
                         "config.model.head_activation=softmax (and config.loss=dice_ce); binary is one sigmoid output")
    model = build_model(model_config)
    network = contract(model_config)  # the network's spec: deep supervision, encoder prefixes
    input_shape = tuple(config.input_shape)
    key = jax.random.key(config.seed, impl=config.get("prng_impl") or None)

    s = config.sampling
    train_iter = iter(finetune_dataset(
        train_source, batch_size=local_bs, seed=int(config.seed), patch_shape=patch_shape,
        foreground_fraction=s.foreground_fraction, patches_per_volume=s.patches_per_volume,
        shard_index=jax.process_index(), shard_count=jax.process_count(),
        transform=flip_transform if s.augment_flips else None,
    ))
    abstract_params = jax.eval_shape(lambda: model.init({"params": key, "dropout": key},
                                                        jnp.zeros((1, *input_shape)), train=False))["params"]
    init_vars = None
    if resuming:  # the parameter groups of the original initialisation
        transferred = _transferred_from_report(workdir)
    else:
        init_vars, report, transferred = _initial_variables(config, model, model_config, key, input_shape)
        if primary:
            (workdir / "transfer_report.json").write_text(json.dumps(report, indent=2))
    labels = parameter_groups(abstract_params, transferred, config.init.freeze_encoder, network.encoder)
    log.info("parameter groups (scalars): %s", count_group_sizes(abstract_params, labels))
    tx = make_finetune_optimizer(config.optimizer, labels, config.init.transferred_lr_scale,
                                 float(config.get("ema_decay") or 0.0))

    ndim = int(model_config.get("ndim", 3))
    prepare = make_prepare(config.task, ndim)
    loss_fn = get_loss(config.loss)
    train_prepare = make_prepare(config.task, ndim, augment_settings(config))  # device augmentation: training only
    train_step = make_train_step(loss_fn, train_prepare, mesh=mesh, apply_kwargs=network.deep_supervision,
                                 max_traces=config.get("max_step_traces"))
    eval_step = make_eval_step(loss_fn, prepare, network.deep_supervision, model_config.get("mode", "accurate"))
    sharding = batch_sharding(mesh)
    val_batches = [global_batch(b, sharding)
                   for b in _validation_batches(config, data, patch_shape, local_bs, global_bs)]
    recalibrate = _precise_bn(config, model, train_source, patch_shape, local_bs, sharding)

    def validate(state) -> dict[str, float]:
        # validated with recalibrated statistics; the state that trains on and is saved keeps its own
        val_state = state.replace(batch_stats=recalibrate(state.variables)[0].get("batch_stats", {}))
        return _validate(eval_step, val_state, val_batches, config.task,
                         metric_names(config.task, config.eval.get("metrics")),
                         MultiClassAccumulator(num_classes, dict(config.get("labels") or {})) if num_classes > 1
                         else None)

    steps_per_epoch = int(config.steps_per_epoch)
    return Task(
        name="finetune", model=model, model_config=model_config, tx=tx, mesh=mesh, key=key, input_shape=input_shape,
        global_batch_size=global_bs, steps_per_epoch=steps_per_epoch,
        max_steps=int(config.get("max_steps") or config.max_epochs * steps_per_epoch), train_iter=train_iter,
        train_step=train_step, validate=validate, recalibrate=lambda state, variables: recalibrate(variables),
        init_variables=init_vars, save_each_epoch=True, select_best=bool(config.select_best),
        # what `genesis-jax predict` needs to read new scans as this run read its own (spacing, intensities, window)
        # and to name its output classes; the quality gate of the weights this run began from (evaluate warns when
        # they failed it)
        export_metadata={INIT_RECORD_KEY: init_record(config.init.checkpoint),
                         **({"inference": InferenceSettings.from_config(config.to_dict()).as_dict(),
                             **segmentation_classes(config, model_config)} if config.task == "segmentation" else {})},
    )


def segmentation_classes(config: ml_collections.ConfigDict, model_config: dict[str, Any]) -> dict[str, Any]:
    """What a segmentation network's weights/ say about its outputs (metadata.json): ``labels`` {name: the class id
    a label map holds} with background 0, and ``head`` 'sigmoid' (binary: one output, foreground above the
    threshold) or 'softmax' (multi-class: the arg-max class)."""
    head = "softmax" if model_config.get("head_activation") == "softmax" else "sigmoid"
    labels = dict(config.get("labels") or {}) or {"background": 0, "foreground": 1}
    return {"labels": {str(k): int(v) for k, v in labels.items()}, "head": head}
