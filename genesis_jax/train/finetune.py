"""``finetune(config, workdir)``: fine-tune a network for a target task, from Genesis weights or from scratch.

The published recipe (Models Genesis §5): Adam, the task's loss (Dice for segmentation, BCE for classification),
per-epoch validation loss driving ReduceLROnPlateau (factor 0.5, patience 6, min_delta 1e-4, min lr 1e-6), early
stopping with the task's patience, and the best-by-validation weights kept (``ModelCheckpoint(save_best_only)``).
The best weights are then evaluated on the test set: whole volumes by sliding window (Dice, IoU, HD95, the published
mean IoU) or crops/candidates (mean IoU / AUC).

Order of initialisation (big_vision's): resume from ``workdir`` when it holds a checkpoint, else the pre-trained
weights named by ``config.init.checkpoint`` (a weights directory or a pre-training workdir), else scratch with
``config.init.scratch_init``.

Workdir layout::

    config.json              the config of the run
    transfer_report.json     what was loaded and what is new
    checkpoints/             train state for resume (every epoch and every ``checkpoint_every_steps``; on SIGTERM)
    weights/best/            best-by-validation weights (a weights directory: usable as --init or by evaluate)
    metrics.jsonl            per-step and per-epoch metrics; TensorBoard events in tb/
    summary.json             the returned summary, with the test metrics
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from genesis_jax.evaluation.evaluate import (
    evaluate_classification,
    evaluate_segmentation_arrays,
    evaluate_volumes,
    export_predictions,
)
from genesis_jax.evaluation.metrics import SegmentationAccumulator, roc_auc
from genesis_jax.evaluation.sliding_window import SlidingWindow, slicewise
from genesis_jax.models import build_model
from genesis_jax.train import finetune_checkpoint as ckpt
from genesis_jax.train.callbacks import EarlyStopping, ReduceOnPlateau
from genesis_jax.train.checkpointing import load_weights, save_weights
from genesis_jax.train.finetune_data import TaskData
from genesis_jax.train.finetune_steps import (
    FinetuneState,
    build_optimizer,
    current_learning_rate,
    make_eval_step,
    make_train_step,
    with_learning_rate,
)
from genesis_jax.train.transfer import (
    count_group_sizes,
    load_pretrained,
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


def eval_model_config(model_config: dict[str, Any], eval_config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The network used for evaluation: for UNet++, ``eval.prune_level`` (L1..L4) and ``eval.mode`` apply; the
    pruned network is a sub-graph with the same parameter names, so the trained variables serve it unchanged."""
    cfg = dict(model_config)
    if cfg.get("name") == "unetpp":
        if eval_config.get("prune_level") is not None:
            cfg["prune_level"] = int(eval_config.prune_level)
        if eval_config.get("mode"):
            cfg["mode"] = eval_config.mode
    return cfg


def _deep_supervision(model_config: dict[str, Any]) -> bool:
    return model_config.get("name") == "unetpp" and bool(model_config.get("deep_supervision", True)) and (
        model_config.get("prune_level") is None
    )


class _RunLog:
    """metrics.jsonl plus TensorBoard scalars."""

    def __init__(self, workdir: Path):
        from tensorboardX import SummaryWriter

        self._file = open(workdir / "metrics.jsonl", "a", encoding="utf-8")
        self._tb = SummaryWriter(str(workdir / "tb"))

    def write(self, kind: str, step: int, values: dict[str, float]) -> None:
        self._file.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")
        self._file.flush()
        for k, v in values.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self._tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        self._file.close()
        self._tb.close()


class _Preemption:
    """Turns SIGTERM into a flag the loop checks after each step (then it checkpoints and returns)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not in the main thread: no handler, the loop runs unchanged
            self._previous = None
        return self

    def _handler(self, signum, frame):
        log.warning("SIGTERM received: checkpointing and stopping after this step")
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _validate(eval_step, variables, x: np.ndarray, y: np.ndarray, batch_size: int, task: str) -> dict[str, float]:
    """Validation loss (per-batch losses weighted by batch size, as Keras) and the task metric."""
    losses, preds = [], []
    for i in range(0, len(x), batch_size):
        loss, pred = eval_step(variables, x[i : i + batch_size], y[i : i + batch_size])
        losses.append(float(loss) * len(x[i : i + batch_size]))
        preds.append(np.asarray(pred))
    pred = np.concatenate(preds)
    out = {"val_loss": sum(losses) / len(x)}
    if task == "segmentation":
        acc = SegmentationAccumulator()
        for i in range(0, len(x), batch_size):
            acc.update(y[i : i + batch_size], pred[i : i + batch_size])
        out.update({f"val_{k}": v for k, v in acc.result().items()})
    else:
        labels = y.reshape(len(y), -1)[:, 0]
        try:
            out["val_auc"] = roc_auc(labels, pred.reshape(len(pred), -1)[:, -1 if pred.shape[-1] > 1 else 0])
        except ValueError:
            out["val_auc"] = float("nan")
    return out


def evaluate_test_set(
    config: ml_collections.ConfigDict,
    model_config: dict[str, Any],
    variables: Any,
    data: TaskData,
    keep_probabilities: bool = False,
) -> dict[str, Any]:
    """Evaluate ``variables`` on the test set of ``data`` with the evaluation network of ``config.eval`` (for UNet++
    its pruning level and mode). With ``keep_probabilities`` segmentation results carry 'probabilities' per volume."""
    model = build_model(eval_model_config(model_config, config.eval))
    predict = model.apply
    batch = int(config.eval.batch_size)
    if config.task == "classification":
        return evaluate_classification(predict, variables, *data.test_arrays, batch) if data.test_arrays else {}
    if data.test_volumes:
        window = tuple(config.eval.window) if config.eval.get("window") else tuple(config.input_shape[:-1])
        if len(window) == 2:  # a 2D network over 3D volumes: axial slices
            predict, window = slicewise(predict), (*window, 1)
        sliding = SlidingWindow(predict, window, config.eval.overlap, batch, config.eval.blend)
        return evaluate_volumes(sliding, variables, data.test_volumes, config.eval.threshold, keep_probabilities,
                                progress=config.get("progress", True))
    if data.test_arrays is not None:
        return evaluate_segmentation_arrays(predict, variables, *data.test_arrays, batch)
    return {}


def finetune(config: ml_collections.ConfigDict, workdir: str | Path, data: TaskData | None = None) -> dict[str, Any]:
    """Fine-tune as ``config`` says, writing everything under ``workdir``; returns the summary (also written to
    ``workdir/summary.json``). ``data`` overrides ``config.data`` (tests and experiments pass arrays directly)."""
    workdir = Path(workdir).expanduser().resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if config.task not in ("segmentation", "classification"):
        raise ValueError(f"config.task must be 'segmentation' or 'classification', got {config.task!r}")
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    if data is None:
        from genesis_jax.train.finetune_sources import load_task_data

        data = load_task_data(config)
    train_data = data.train
    if config.label_fraction < 1.0:
        train_data = train_data.subset(config.label_fraction, seed=config.data.get("subset_seed", 0))
    log.info("data: %s; training on %d %s (label fraction %.2f)", data.description, len(train_data),
             "samples" if hasattr(train_data, "x") else "volumes", config.label_fraction)

    model_config = model_config_for_run(config)
    if config.task == "segmentation" and model_config.get("num_classes", 1) != 1:
        raise ValueError("config.model.num_classes: segmentation fine-tuning is binary (one sigmoid output); got "
                         f"{model_config.get('num_classes')}")
    model = build_model(model_config)
    deep_supervision = _deep_supervision(model_config)
    batch_size = int(config.batch_size)
    sample_input = jnp.zeros((batch_size, *config.input_shape), jnp.float32)
    variables = jax.jit(model.init)(jax.random.key(config.seed), sample_input)
    variables = jax.tree.map(np.asarray, dict(variables))

    init = config.init.checkpoint
    if is_scratch(init):
        transferred: set[str] = set()
        report = {"source": f"scratch ({config.init.scratch_init})", "loaded": [], "fresh": ["all"], "unused": []}
        log.info("initialisation: scratch, kernel initialiser %s", config.init.scratch_init)
    else:
        source, source_config, directory = load_pretrained(init)
        variables, rep = transfer_variables(variables, source, config.task, config.init.keep_head, str(directory))
        rep.log(log)
        transferred, report = rep.loaded_params(), rep.as_dict()
        report["source_model_config"] = source_config
    (workdir / "transfer_report.json").write_text(json.dumps(report, indent=2))

    params = jax.tree.map(jnp.asarray, variables["params"])
    batch_stats = jax.tree.map(jnp.asarray, variables.get("batch_stats", {}))
    labels = parameter_groups(params, transferred, config.init.freeze_encoder)
    log.info("parameter groups (scalars): %s", count_group_sizes(params, labels))
    opt = config.optimizer.to_dict()
    tx = build_optimizer(opt.pop("name"), opt.pop("learning_rate"), labels, config.init.transferred_lr_scale, **opt)
    state = FinetuneState(jnp.zeros((), jnp.int32), params, batch_stats, tx.init(params))

    plateau = ReduceOnPlateau(**config.plateau.to_dict())
    stopper = EarlyStopping(**config.early_stopping.to_dict())
    history: list[dict[str, float]] = []
    start_step = 0
    stopped_early = False
    restored = ckpt.restore_latest(workdir, state)
    if restored is not None:
        state, loop = restored
        plateau = ReduceOnPlateau(**loop["plateau"])
        stopper = EarlyStopping(**loop["early_stopping"])
        history = loop["history"]
        stopped_early = stopper.wait >= stopper.patience
        start_step = int(state.step)
        log.info("resumed from %s at step %d (epoch %d)", workdir / ckpt.CHECKPOINT_DIR, start_step,
                 start_step // config.steps_per_epoch)

    train_step = make_train_step(model, config.loss, tx, deep_supervision, config.seed)
    eval_step = make_eval_step(model, config.loss, deep_supervision)
    val_x, val_y = data.validation
    steps_per_epoch = int(config.steps_per_epoch)
    run_log = _RunLog(workdir)
    preempted = False
    step = start_step
    t_start = time.time()
    with _Preemption() as preemption:
        epoch = step // steps_per_epoch
        while epoch < config.max_epochs and not stopped_early:
            first = step - epoch * steps_per_epoch
            bar = tqdm(range(first, steps_per_epoch), desc=f"epoch {epoch + 1}", leave=False,
                       disable=not config.get("progress", True))
            t_epoch = time.time()
            for _ in bar:
                x, y = train_data.batch(step, batch_size, config.seed)
                state, metrics = train_step(state, x, y)
                step += 1
                if step % config.log_every_steps == 0 or step % steps_per_epoch == 0:
                    values = {k: float(v) for k, v in metrics.items()}
                    if not math.isfinite(values["loss"]):
                        run_log.close()
                        raise FloatingPointError(
                            f"non-finite training loss {values['loss']} at step {step}; the last good checkpoint "
                            f"is in {workdir / ckpt.CHECKPOINT_DIR} (lower optimizer.learning_rate?)")
                    run_log.write("train", step, values)
                    bar.set_postfix(loss=f"{values['loss']:.4f}")
                # (the end-of-epoch checkpoint is written after validation, below)
                if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0 and step % steps_per_epoch:
                    ckpt.save(workdir, state, _loop_state(plateau, stopper, history))
                if preemption.requested:
                    break
            if preemption.requested and step % steps_per_epoch:
                ckpt.save(workdir, state, _loop_state(plateau, stopper, history))
                preempted = True
                break
            # end of an epoch: validation, callbacks, best weights, checkpoint
            val = _validate(eval_step, state.variables, val_x, val_y, batch_size, config.task)
            lr = current_learning_rate(state.opt_state)
            improved, stop = stopper.update(val["val_loss"], epoch)
            new_lr = plateau.update(val["val_loss"], lr)
            if new_lr != lr:
                log.info("epoch %d: validation loss on a plateau, learning rate %.3g -> %.3g", epoch + 1, lr, new_lr)
                state = state.replace(opt_state=with_learning_rate(state.opt_state, new_lr))
            row = {"epoch": epoch + 1, **val, "learning_rate": lr, "epoch_seconds": time.time() - t_epoch}
            history.append(row)
            run_log.write("epoch", step, row)
            log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"))
            if improved:
                save_weights(workdir / "weights" / "best", jax.tree.map(np.asarray, state.variables), model_config,
                             {"step": step, "epoch": epoch + 1, "val_loss": val["val_loss"], "init": str(init)})
            stopped_early = stop
            ckpt.save(workdir, state, _loop_state(plateau, stopper, history))
            epoch += 1
            if preemption.requested:
                preempted = True
                break
    run_log.close()

    summary: dict[str, Any] = {
        "workdir": str(workdir),
        "init": "scratch" if is_scratch(init) else str(init),
        "steps": step,
        "epochs": len(history),
        "stopped_early": stopped_early,
        "preempted": preempted,
        "best_epoch": stopper.best_epoch + 1,
        "best_val_loss": stopper.best,
        "train_seconds": time.time() - t_start,
        "label_fraction": config.label_fraction,
        "train_samples": len(train_data),
        "history": history,
    }
    if not preempted and (workdir / "weights" / "best").exists():
        best, _, _ = load_weights(workdir / "weights" / "best")
        export = config.task == "segmentation" and (config.eval.save_predictions or config.eval.overlays)
        summary["test"] = evaluate_test_set(config, model_config, best, data, keep_probabilities=export)
        if export and "probabilities" in summary["test"]:
            export_predictions(summary["test"].pop("probabilities"), data.test_volumes, workdir / "predictions",
                               nifti=config.eval.save_predictions, overlays=config.eval.overlays,
                               threshold=config.eval.threshold)
        log.info("test: %s", json.dumps({k: v for k, v in summary["test"].items() if k != "per_volume"}))
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


def _loop_state(plateau: ReduceOnPlateau, stopper: EarlyStopping, history: list) -> dict[str, Any]:
    return {"plateau": plateau.state_dict(), "early_stopping": stopper.state_dict(), "history": history}
