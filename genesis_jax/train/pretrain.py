"""Self-supervised restoration pre-training (Models Genesis): ``pretrain(config, workdir) -> summary``.

Each step takes a global batch of clean cubes sharded over the ``data`` mesh axis, deforms it ON THE DEVICE with the
restoration transforms (flip, local shuffle, Bezier intensity map, in/out-painting) inside the jitted step, and
trains the network to restore the original with MSE on its sigmoid output. Epochs of ``steps_per_epoch`` steps end
with a validation pass on transformed validation cubes (a fixed key, so epochs are comparable) that drives the
learning-rate schedule, early stopping and the best checkpoint.

Resume order: the workdir's latest checkpoint (train state, data iterator position, schedule state), else
``config.init`` (a weights directory or another training workdir), else a random initialisation. SIGTERM/SIGINT
save a checkpoint and return with ``stopped='preempted'``; a non-finite loss or gradient stops with
:class:`TrainingDiverged` and leaves the last good checkpoint in place.
"""

from __future__ import annotations

import functools
import hashlib
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import ml_collections
import numpy as np

from genesis_jax.data.pipeline import cube_source, global_batch, pretrain_dataset
from genesis_jax.models import build_model
from genesis_jax.models.weights import save_weights
from genesis_jax.train import checkpointing, precise_bn
from genesis_jax.train.config_checks import validate_pretrain_config, warn_changed_settings
from genesis_jax.train.distributed import any_process, to_host
from genesis_jax.train.metrics_log import MetricsLog, Progress, save_preview
from genesis_jax.train.losses import mse_loss
from genesis_jax.train.mesh import batch_sharding, local_batch_size, make_mesh, resolve_batch_size
from genesis_jax.train.schedules import EarlyStopping, build_lr_schedule, build_optimizer, get_learning_rate, \
    set_learning_rate
from genesis_jax.train.state import abstract_train_state, create_train_state
from genesis_jax.train.steps import make_eval_step, make_train_step
from genesis_jax.workdir import crash_point, hold

TransformFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


class TrainingDiverged(RuntimeError):
    """A step produced a non-finite loss or gradient norm; the message names the step and the kept checkpoint."""


class PreemptionGuard:
    """Turns SIGTERM (and SIGINT) into a flag the training loop polls, so the loop saves and returns cleanly.
    Handlers are restored on exit; outside the main thread nothing is installed."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl+C stops at once
        self.received = signal.Signals(signum).name

    def __enter__(self) -> "PreemptionGuard":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def default_transform(transforms_config: Any) -> TransformFn:
    """The published restoration deformations, run on the device (genesis_jax.transforms)."""
    from genesis_jax import transforms

    return functools.partial(transforms.restoration_batch, config=transforms_config or None)


def make_restoration_prepare(transform: TransformFn, *, slice_2d: bool = False) -> Callable:
    """``prepare(key, batch)`` for the steps: deform ``batch['cube']``; with ``slice_2d`` (Genesis 2D) take one
    random axial slice per sample of the deformed pair, giving (B, X, Y, 1) inputs and targets."""

    def prepare(key: jax.Array, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        transform_key, slice_key = jax.random.split(key)
        inputs, targets = transform(transform_key, batch["cube"])
        if slice_2d:
            depth = inputs.shape[3]
            z = jax.random.randint(slice_key, (inputs.shape[0],), 0, depth)
            take = jax.vmap(lambda volume, i: jax.lax.dynamic_index_in_dim(volume, i, axis=2, keepdims=False))
            inputs, targets = take(inputs, z), take(targets, z)
        return inputs, targets

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


def params_fingerprint(params: Any) -> str:
    """sha256 of this process's copy of the (replicated) parameters: equal across processes and across runs that
    computed bit-identical weights."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(np.asarray(leaf.addressable_data(0))).tobytes())
    return digest.hexdigest()


def _config_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


class _Run:
    """The mutable bookkeeping of one ``pretrain`` call (kept out of the function body for readability)."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: Path, steps_per_epoch: int):
        self.config = config
        self.workdir = workdir
        self.steps_per_epoch = steps_per_epoch
        sched = config.schedule
        self.lr_schedule = build_lr_schedule(
            sched.kind, float(config.optimizer.learning_rate), factor=sched.factor, patience=sched.patience,
            min_delta=sched.min_delta, min_lr=sched.min_lr, every_epochs=sched.every_epochs,
        )
        self.early_stopping = EarlyStopping(config.early_stopping.patience, config.early_stopping.min_delta)
        self.best_val = math.inf
        self.best_step: int | None = None
        self.last_loss = math.nan
        self.last_good_step = 0
        self.finished: str | None = None  # 'early_stopping' once the run has ended that way

    def meta(self, step: int) -> dict[str, Any]:
        return {
            "step": step,
            "epoch": step // self.steps_per_epoch,
            "config": _config_dict(self.config),
            "model_config": _config_dict(self.config.model),
            "lr_schedule": self.lr_schedule.state_dict(),
            "early_stopping": self.early_stopping.state_dict(),
            "best_val_loss": self.best_val,
            "best_step": self.best_step,
            "processes": jax.process_count(),
            "devices": jax.device_count(),
            "finished": self.finished,
            "last_loss": self.last_loss if math.isfinite(self.last_loss) else None,
        }

    def load_meta(self, meta: Mapping[str, Any]) -> None:
        self.lr_schedule.load_state_dict(meta["lr_schedule"])
        self.early_stopping.load_state_dict(meta["early_stopping"])
        self.best_val = float(meta["best_val_loss"])
        self.best_step = meta.get("best_step")
        self.finished = meta.get("finished")
        self.last_loss = float(meta["last_loss"]) if meta.get("last_loss") is not None else math.nan
        warn_changed_settings(meta.get("config") or {}, _config_dict(self.config), self.workdir)


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
    with hold(workdir, "pretrain", enabled=jax.process_index() == 0):
        crash_point("startup")
        return _pretrain(config, workdir, transform, train_source, val_source)


def _pretrain(config: ml_collections.ConfigDict, workdir: Path, transform: TransformFn | None, train_source: Any,
              val_source: Any) -> dict[str, Any]:
    primary = jax.process_index() == 0
    started = time.time()

    mesh = make_mesh(config.get("num_devices"))
    global_bs = resolve_batch_size(mesh, config.get("per_device_batch_size"), config.get("global_batch_size"))
    local_bs = local_batch_size(global_bs)
    model = build_model(config.model)
    tx = build_optimizer(**_config_dict(config.optimizer))
    prepare = make_restoration_prepare(transform or default_transform(config.get("transforms")),
                                       slice_2d=bool(config.get("slice_2d", False)))
    apply_kwargs = dict(config.get("apply_kwargs") or {})

    train_src, val_src = _data_sources(config, train_source, val_source)
    steps_per_epoch = int(config.get("steps_per_epoch") or max(1, len(train_src) // global_bs))
    num_val_batches = int(config.get("validation_batches") or len(val_src) // global_bs)
    if num_val_batches < 1 or num_val_batches * global_bs > len(val_src):
        raise ValueError(f"the validation set ({len(val_src)} cubes) does not fill config.validation_batches="
                         f"{num_val_batches or 1} global batch(es) of {global_bs}")
    max_steps = config.get("max_steps") or config.max_epochs * steps_per_epoch
    train_iter = iter(pretrain_dataset(train_src, batch_size=local_bs, seed=config.seed))
    val_iter = iter(pretrain_dataset(val_src, batch_size=local_bs, seed=config.seed, shuffle=False, repeat=False))
    val_batches = [next(val_iter) for _ in range(num_val_batches)]
    _check_cube_shape(val_batches[0], config)
    sharding = batch_sharding(mesh)

    run = _Run(config, workdir, steps_per_epoch)
    ckpt_cfg = config.checkpoint
    ckpts = checkpointing.TrainCheckpoints(workdir, keep=ckpt_cfg.keep, async_save=ckpt_cfg.async_save)
    input_shape = tuple(config.input_shape)
    key = jax.random.key(config.seed, impl=config.get("prng_impl") or None)
    resumed = ckpts.resume(lambda: abstract_train_state(model, tx, key, input_shape, mesh), train_iter)
    resumed_from = None if resumed is None else int(resumed[1]["step"])
    if resumed is not None:
        state, meta = resumed
        run.load_meta(meta)
    else:
        init_vars = None
        if config.get("init"):
            init_vars, _, _ = checkpointing.load_init_weights(config.init)
        state = create_train_state(model, tx, key, input_shape, mesh, variables=init_vars)
    step = int(state.step)
    run.last_good_step = step
    stopped = "completed"
    if run.finished == "early_stopping":
        max_steps, stopped = step, "early_stopping"  # rerunning a finished run only re-exports its results

    train_step = make_train_step(mse_loss, prepare, mesh=mesh, apply_kwargs=apply_kwargs,
                                 max_traces=config.get("max_step_traces"))
    eval_step = make_eval_step(mse_loss, prepare, apply_kwargs=apply_kwargs)
    val_key = jax.random.fold_in(key, 0x5EED)
    val_device = [global_batch(b, sharding) for b in val_batches]

    log = MetricsLog(workdir, enabled=primary, resume_step=step if resumed_from is not None else None,
                     tensorboard=config.logging.tensorboard)
    progress = Progress(max_steps, step, enabled=primary and config.logging.progress, messages=primary)
    if resumed_from is not None:
        progress.write(f"resumed from step {step} ({workdir / checkpointing.CHECKPOINTS_DIR / str(step)})")
    else:
        progress.write(f"pretrain: {jax.device_count()} device(s), {jax.process_count()} process(es), global batch "
                       f"{global_bs}, {steps_per_epoch} steps/epoch, workdir {workdir}")

    def validate() -> float:
        losses = [eval_step(state, b, jax.random.fold_in(val_key, i)) for i, b in enumerate(val_device)]
        return float(np.mean([float(m["loss"]) for m in losses]))

    def write_preview(at_step: int) -> Path | None:
        out = eval_step(state, val_device[0], jax.random.fold_in(val_key, 0))
        arrays = [to_host(out[k])[: config.logging.preview_samples] for k in ("inputs", "predictions", "targets")]
        if not primary:
            return None
        path = workdir / "previews" / f"step_{at_step:07d}.png"
        grid = save_preview(path, *arrays, max_rows=config.logging.preview_samples)
        log.image("restoration/input|prediction|target", grid, at_step)
        return path

    pending: tuple[int, dict[str, jax.Array]] | None = None
    last_handled = time.time()
    last_save_time = time.time()
    last_saved_step = resumed_from

    def save(at_step: int) -> None:
        nonlocal last_save_time, last_saved_step
        if at_step != last_saved_step:
            ckpts.save(at_step, state.checkpoint_tree(), meta=run.meta(at_step), data_iterator=train_iter)
            last_saved_step = at_step
        last_save_time = time.time()

    preview_path: Path | None = None

    def handle(item: tuple[int, dict[str, jax.Array]]) -> None:
        """Fetch one step's metrics (one step behind the dispatch, so the device stays busy), log, NaN-check."""
        nonlocal last_handled
        at, metrics = item
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        now = time.time()
        rate = 1.0 / max(now - last_handled, 1e-9)  # steps are handled one by one, one behind the device
        last_handled = now
        if not values["finite"]:
            ckpts.wait()
            kept = ckpts.latest_step()
            log.write(at, {**values, "epoch": (at - 1) // steps_per_epoch}, kind="train")
            raise TrainingDiverged(
                f"non-finite {'loss' if not math.isfinite(values['loss']) else 'gradient norm'} at step {at} "
                f"(loss={values['loss']}, grad_norm={values['grad_norm']}); the update was not applied and training "
                f"stopped. The last good checkpoint is "
                + (f"step {kept} in {workdir / checkpointing.CHECKPOINTS_DIR}" if kept is not None else "none (no "
                   "checkpoint was written yet)")
                + ". Lower --config.optimizer.learning_rate or check the data, then rerun the same command to resume."
            )
        run.last_loss, run.last_good_step = values["loss"], at
        row = {"epoch": (at - 1) // steps_per_epoch, "loss": values["loss"], "learning_rate": values["learning_rate"],
               "grad_norm": values["grad_norm"], "param_norm": values["param_norm"], "steps_per_s": rate,
               "pairs_per_s": rate * global_bs}
        if at % config.logging.every_steps == 0:
            log.write(at, row, kind="train")
        progress.update(1, loss=values["loss"], lr=values["learning_rate"])

    try:
        with PreemptionGuard() as guard:
            while step < max_steps:
                batch = global_batch(next(train_iter), sharding)
                state, metrics = train_step(state, batch)
                step += 1
                crash_point("step")  # test-only (genesis_jax.workdir): a kill while a step is in flight
                if pending is not None:
                    handle(pending)
                pending = (step, metrics)

                epoch_end = step % steps_per_epoch == 0
                time_due = time.time() - last_save_time >= ckpt_cfg.every_seconds
                preempted, time_due = any_process([guard.received is not None, time_due]) if (
                    jax.process_count() == 1 or step % ckpt_cfg.sync_every_steps == 0) else (False, False)
                save_due = step % ckpt_cfg.every_steps == 0 or time_due or preempted or step == max_steps
                preview_due = config.logging.preview_every_steps and step % config.logging.preview_every_steps == 0
                if not (epoch_end or save_due or preview_due):
                    continue
                handle(pending)  # the finite check must precede any save of this state
                pending = None
                early_stop = False
                if epoch_end:
                    val_loss = validate()
                    epoch = step // steps_per_epoch
                    early_stop = run.early_stopping(epoch, val_loss)
                    improved = val_loss < run.best_val
                    if improved:
                        run.best_val, run.best_step = val_loss, step
                        ckpts.save_best(step, state.variables, val_loss=val_loss, meta=run.meta(step))
                    lr = float(get_learning_rate(state.opt_state))
                    new_lr = run.lr_schedule(epoch, val_loss, lr)
                    if new_lr != lr:
                        state = state.replace(opt_state=set_learning_rate(state.opt_state, new_lr))
                        progress.write(f"epoch {epoch}: learning rate {lr:g} -> {new_lr:g}")
                    log.write(step, {"epoch": epoch, "val_loss": val_loss, "best_val_loss": run.best_val,
                                     "learning_rate": new_lr, "epochs_without_improvement": run.early_stopping.wait},
                              kind="validation")
                    log.flush()
                    if early_stop:
                        progress.write(f"early stopping after epoch {epoch}: no improvement for "
                                       f"{run.early_stopping.patience} epochs (best {run.best_val:.5g})")
                        stopped = run.finished = "early_stopping"
                if preview_due:
                    preview_path = write_preview(step) or preview_path
                if save_due or early_stop:
                    save(step)
                    log.flush()
                if preempted:
                    stopped = "preempted"
                    progress.write(f"{guard.received or 'preemption'} received: saved checkpoint at step {step}, "
                                   "exiting; rerun the same command to resume")
                    break
                if early_stop:
                    break
            if pending is not None:
                handle(pending)
                pending = None
            if stopped != "preempted":
                save(step)
                preview_path = write_preview(step) or preview_path
    finally:
        progress.close()
        ckpts.close()
        log.close()

    def training_inputs(n: int):
        """Precise BatchNorm statistics come from what the network trains on: deformed training cubes (an
        iterator of their own), through the compiled validation step's prepare."""
        it = iter(pretrain_dataset(train_src, batch_size=local_bs, seed=config.seed + 2, prefetch=2))
        bn_key = jax.random.fold_in(key, 0xB4)
        return (eval_step(state, global_batch(next(it), sharding), jax.random.fold_in(bn_key, i))["inputs"]
                for i in range(n))

    weights_dir = None
    if stopped != "preempted":
        if run.best_step is not None:
            variables, _, _ = checkpointing.load_init_weights(workdir)
            source = {"step": run.best_step, "val_loss": run.best_val, "kind": "best validation loss"}
        else:
            variables = jax.tree.map(to_host, state.variables)
            source = {"step": step, "kind": "final"}
        variables, source["precise_bn_batches"] = precise_bn.recalibrate(
            model, variables, precise_bn.configured_num_batches(config), training_inputs, input_shape, **apply_kwargs)
        variables = jax.tree.map(to_host, variables)
        weights_dir = save_weights(
            workdir / "weights", variables, _config_dict(config.model),
            {"source": "genesis_jax pretrain", "workdir": str(workdir), **source},
        )
    elapsed = time.time() - started
    return {
        "workdir": str(workdir),
        "stopped": stopped,
        "step": step,
        "epoch": step // steps_per_epoch,
        "steps_per_epoch": steps_per_epoch,
        "resumed_from": resumed_from,
        "final_loss": run.last_loss if math.isfinite(run.last_loss) else None,  # None: no step ran (valid JSON)
        "best_val_loss": run.best_val if math.isfinite(run.best_val) else None,
        "best_step": run.best_step,
        "global_batch_size": global_bs,
        "devices": jax.device_count(),
        "processes": jax.process_count(),
        "seconds": elapsed,
        "weights": str(weights_dir) if weights_dir else None,
        "preview": str(preview_path) if preview_path else None,
        "params_fingerprint": params_fingerprint(state.params),
    }
