"""The one training loop that pre-training and fine-tuning share: :func:`train` runs a :class:`Task`.

    resume -> step -> periodic actions (log, validate, save, preview) -> LR schedule / early stopping / best
    checkpoint -> export weights

A task supplies only what differs (the network and optimiser, the data iterator, the jitted train step, the
validation metrics, how precise-BN inputs are made, an optional preview hook); everything else lives here once:

- Resume order: the workdir's latest checkpoint (train state, data iterator position, schedule, early stopping,
  best, history), else the task's initial variables, else a random initialisation. ``best/`` steps after the
  resumed one are rolled back (:meth:`~genesis_jax.train.checkpointing.TrainCheckpoints.resume`).
- Metrics are fetched one step behind the dispatch (the device stays busy); the NaN guard checks them before any
  save of the state they produced, and a non-finite step raises :class:`TrainingDiverged` naming the kept
  checkpoint.
- Before anything is compiled, a network whose state, gradients and activations cannot fit the device's memory is
  refused naming the config field (:func:`~genesis_jax.train.state.check_fits_memory`, ``jax.eval_shape`` only).
- A SIGTERM/SIGINT while the first step compiles ends the process within a second (nothing to lose); later ones
  save at the end of the step in flight (:class:`PreemptionGuard`). A failed asynchronous save stops the run at the
  next step; a full disk is one line naming the workdir.
- Periodic actions are due by :func:`itstime`; preemption (:class:`PreemptionGuard`) and the wall-clock save are
  agreed over processes every ``checkpoint.sync_every_steps`` steps (every step in one process).
- Each ``steps_per_epoch`` steps: validation, early stopping, the best-by-validation checkpoint, the epoch-level
  learning-rate schedule; one row per epoch in ``validation.csv`` and the run's history; ``progress.png`` redrawn.
- The end: the best (or final) variables, their BatchNorm statistics re-estimated (precise BN), exported as a
  weights directory ``weights/``.
- Validation, ``best/`` and the export take the parameters' moving average in place of the trained parameters
  when the optimiser keeps one (:mod:`genesis_jax.train.ema`); the export's source says which.

The test-only kill hooks (:func:`genesis_jax.workdir.crash_point`) keep their phases: ``startup`` (in
:func:`locked`), ``step`` (a step in flight), and ``best``/``periodic_save``/``export`` inside the checkpoint writers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Self

import jax
import ml_collections
import numpy as np

from genesis_jax.data.pipeline import global_batch
from genesis_jax.models.weights import save_weights
from genesis_jax.train import checkpointing, ema
from genesis_jax.train.config_checks import warn_changed_settings
from genesis_jax.train.distributed import any_process, to_host
from genesis_jax.train.metrics_log import MetricsLog, Progress
from genesis_jax.train.mesh import batch_sharding
from genesis_jax.train.schedules import EarlyStopping, build_lr_schedule, get_learning_rate, set_learning_rate
from genesis_jax.train.state import TrainState, abstract_train_state, check_fits_memory, create_train_state
from genesis_jax.workdir import crash_point, full_disk_named, hold

Variables = Mapping[str, Any]


class TrainingDiverged(RuntimeError):
    """A step produced a non-finite loss or gradient norm; the message names the step and the kept checkpoint."""


class PreemptionGuard:
    """Turns SIGTERM (and SIGINT) into a flag the training loop polls, so the loop saves and returns cleanly.
    Handlers are restored on exit; outside the main thread nothing is installed.

    Python runs a signal handler only between bytecodes of the main thread, so a signal that arrives while the main
    thread waits in XLA (the first step's compilation: minutes for a large network) would wait for it. A watcher
    thread is woken at once instead (``signal.set_wakeup_fd``): while ``lossless`` is set (the first step of this
    process is in flight, nothing since the last checkpoint would be lost) it ends the process within a second,
    saying so; otherwise the loop saves at the end of the step as usual."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, name: str = "train") -> None:
        self.name = name
        self.received: str | None = None
        self.lossless = False
        self._previous: dict[int, Any] = {}
        self._previous_wakeup = -1
        self._wake: tuple[Any, Any] | None = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl+C stops at once
        self.received = signal.Signals(signum).name

    def _watch(self, reader: Any) -> None:
        while True:
            try:
                data = reader.recv(16)
            except OSError:
                return
            if not data:
                return  # closed on exit
            signums = [b for b in data if b in {int(s) for s in self.SIGNALS}]
            if signums and self.lossless:
                sys.stderr.write(f"{self.name}: {signal.Signals(signums[0]).name} received before the first step "
                                 "finished (still compiling): nothing to save since the last checkpoint; exiting; "
                                 "rerun the same command to resume\n")
                sys.stderr.flush()
                sys.stdout.flush()
                os._exit(0)

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
            reader, writer = socket.socketpair()
            writer.setblocking(False)
            self._wake = (reader, writer)
            self._previous_wakeup = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
            threading.Thread(target=self._watch, args=(reader,), name="genesis-jax-signal-watch", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.lossless = False
        if self._wake is not None:
            signal.set_wakeup_fd(self._previous_wakeup)
            self._wake[1].close()
            self._wake[0].shutdown(socket.SHUT_RDWR)
            self._wake[0].close()
            self._wake = None
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def itstime(step: int, every_n_steps: int | None, total_steps: int | None = None, *, last: bool = False) -> bool:
    """Whether a periodic action is due after ``step`` (1-based, the steps done): every ``every_n_steps`` steps
    (0 or None: never), and with ``last`` also at ``total_steps``. After big_vision's ``itstime``."""
    if last and total_steps is not None and step == total_steps:
        return True
    return bool(every_n_steps) and every_n_steps > 0 and step % every_n_steps == 0


def params_fingerprint(params: Any) -> str:
    """sha256 of this process's copy of the (replicated) parameters: equal across processes and across runs that
    computed bit-identical weights."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(np.asarray(leaf.addressable_data(0))).tobytes())
    return digest.hexdigest()


def config_dict(config: Any) -> dict[str, Any]:
    """A ConfigDict (or mapping) as a plain dict, as checkpoints and summaries record it."""
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


@contextlib.contextmanager
def locked(workdir: Path, command: str) -> Iterator[None]:
    """The workdir's write lock for the whole command (:func:`genesis_jax.workdir.hold`; the primary process
    takes it for all), then the ``startup`` crash point."""
    with hold(workdir, command, enabled=jax.process_index() == 0):
        crash_point("startup")  # test-only (genesis_jax.workdir): a kill before anything is written
        yield


@dataclasses.dataclass
class Task:
    """What one kind of training supplies to :func:`train`; built by the entry function once it knows whether the
    workdir resumes (fine-tuning's optimiser groups and initial variables depend on it).

    ``train_step(state, batch) -> (state, metrics)`` is jitted with the state donated and reports loss, grad_norm,
    param_norm, learning_rate and finite (:func:`genesis_jax.train.steps.make_train_step`).
    ``validate(state) -> {'val_loss': ..., other 'val_*' metrics}`` runs at each epoch end.
    ``recalibrate(state, variables) -> (variables, batches used)`` re-estimates BatchNorm statistics for the export.
    ``preview(state, step, log) -> path or None`` (optional) runs every ``preview_every_steps`` and at the end.
    """

    name: str  # 'pretrain' / 'finetune': the progress bar, every message's prefix, the weights' source
    model: Any
    model_config: dict[str, Any]
    tx: Any
    mesh: Any
    key: jax.Array
    input_shape: tuple[int, ...]
    global_batch_size: int
    steps_per_epoch: int
    max_steps: int
    train_iter: Any  # the grain iterator whose position is checkpointed with the state
    train_step: Callable[[TrainState, Any], tuple[TrainState, Mapping[str, jax.Array]]]
    validate: Callable[[TrainState], dict[str, float]]
    recalibrate: Callable[[TrainState, Variables], tuple[Variables, int]]
    init_variables: Variables | None = None  # a fresh start's variables (None: random initialisation)
    # initial values of trainable parameters the task owns besides the network's (a pretext's learned mask token):
    # trained by the same optimiser and checkpointed with the state (TrainState.task_params), never exported
    task_params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    preview: Callable[[TrainState, int, MetricsLog], Path | None] | None = None
    preview_every_steps: int = 0
    save_each_epoch: bool = False  # also checkpoint after every validation
    select_best: bool = True  # export the best-by-validation variables (else the final ones)
    export_metadata: dict[str, Any] = dataclasses.field(default_factory=dict)  # added to weights/metadata.json
    # (state, exported variables) -> what metadata.json records of exactly the exported variables (e.g. their
    # quality gate), besides export_metadata; also left in Result.record
    export_record: Callable[[TrainState, Variables], Mapping[str, Any]] | None = None


@dataclasses.dataclass
class Result:
    """What :func:`train` leaves for the entry function's summary."""

    task: Task
    state: TrainState
    step: int
    stopped: str  # 'completed', 'early_stopping' or 'preempted'
    resumed_from: int | None
    best: dict[str, Any]  # {'val_loss', 'step'(, 'epoch')}; step None before the first validation
    history: list[dict[str, Any]]  # one row per validated epoch
    last_loss: float  # NaN when no step ever ran
    preview: Path | None
    weights: Path | None = None  # None when preempted
    variables: Variables | None = None  # the exported (host) variables
    source: dict[str, Any] | None = None  # which variables were exported (kind, step, precise_bn_batches, ...)
    record: dict[str, Any] | None = None  # the task's export_record of the exported variables


def divergence_message(at: int, values: Mapping[str, float], kept: int | None, workdir: Path) -> str:
    """The one-paragraph error of a non-finite step: what, where, what was kept, what to do."""
    what = "loss" if not math.isfinite(values["loss"]) else "gradient norm"
    where = (f"step {kept} in {workdir / checkpointing.CHECKPOINTS_DIR}" if kept is not None
             else "none (no checkpoint was written yet)")
    return (f"non-finite {what} at step {at} (loss={values['loss']}, grad_norm={values['grad_norm']}); the update "
            f"was not applied and training stopped. The last good checkpoint is {where}. Lower "
            "--config.optimizer.learning_rate or check the data, then rerun the same command to resume.")


class _Bookkeeping:
    """The schedule, early stopping, best and history of a run: what a checkpoint's metadata carries besides the
    train state and data position."""

    def __init__(self, config: ml_collections.ConfigDict, model_config: dict[str, Any], steps_per_epoch: int):
        self.config, self.model_config, self.steps_per_epoch = config, model_config, steps_per_epoch
        s = config.schedule
        self.lr_schedule = build_lr_schedule(
            s.kind, float(config.optimizer.learning_rate), factor=s.factor, patience=s.patience,
            min_delta=s.min_delta, min_lr=s.min_lr, every_epochs=s.every_epochs,
        )
        self.early_stopping = EarlyStopping(config.early_stopping.patience, config.early_stopping.min_delta)
        self.best: dict[str, Any] = {"val_loss": math.inf, "step": None}
        self.history: list[dict[str, Any]] = []
        self.finished: str | None = None  # 'early_stopping' once the run has ended that way
        self.last_loss = math.nan

    def meta(self, step: int) -> dict[str, Any]:
        return {
            "step": step, "epoch": step // self.steps_per_epoch, "config": config_dict(self.config),
            "model_config": self.model_config, "lr_schedule": self.lr_schedule.state_dict(),
            "early_stopping": self.early_stopping.state_dict(), "best": self.best, "history": self.history,
            "finished": self.finished, "last_loss": self.last_loss if math.isfinite(self.last_loss) else None,
            "processes": jax.process_count(), "devices": jax.device_count(),
        }

    def load(self, meta: Mapping[str, Any], workdir: Path) -> None:
        self.lr_schedule.load_state_dict(meta["lr_schedule"])
        self.early_stopping.load_state_dict(meta["early_stopping"])
        if "best" in meta:
            self.best = dict(meta["best"])
        else:  # a pre-training checkpoint written before the loops were one
            self.best = {"val_loss": float(meta["best_val_loss"]), "step": meta.get("best_step")}
        self.history = list(meta.get("history") or [])
        self.finished = meta.get("finished")
        self.last_loss = float(meta["last_loss"]) if meta.get("last_loss") is not None else math.nan
        warn_changed_settings(meta.get("config") or {}, config_dict(self.config), workdir)


class _Loop:
    """One :func:`train` call: the state and what the periodic actions share."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: Path, task: Task,
                 ckpts: checkpointing.TrainCheckpoints, log: MetricsLog, progress: Progress,
                 book: _Bookkeeping, state: TrainState, resumed_from: int | None):
        self.config, self.workdir, self.task, self.ckpts = config, workdir, task, ckpts
        self.log, self.progress, self.book, self.state = log, progress, book, state
        self.step = int(state.step)
        self.last_saved = resumed_from
        self.last_save_time = self.last_handled = time.time()
        self.preview_path: Path | None = None

    def say(self, message: str) -> None:
        self.progress.write(f"{self.task.name}: {message}")

    def epoch_of(self, step: int) -> int:
        """The epoch a step's update belongs to (step 4 of 4-step epochs is in epoch 0)."""
        return (step - 1) // self.task.steps_per_epoch

    def handle(self, at: int, metrics: Mapping[str, jax.Array]) -> None:
        """Fetch one step's metrics (one step behind the dispatch), NaN-check, log, advance the bar."""
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        now = time.time()
        rate = 1.0 / max(now - self.last_handled, 1e-9)  # handled one by one, one behind the device
        self.last_handled = now
        if not values["finite"]:
            self.ckpts.wait()
            self.log.write(at, {**values, "epoch": self.epoch_of(at)}, kind="train")
            raise TrainingDiverged(divergence_message(at, values, self.ckpts.latest_step(), self.workdir))
        self.book.last_loss = values["loss"]
        if itstime(at, self.config.logging.every_steps):
            self.log.write(at, {"epoch": self.epoch_of(at), "loss": values["loss"],
                                "learning_rate": values["learning_rate"], "grad_norm": values["grad_norm"],
                                "param_norm": values["param_norm"], "steps_per_s": rate,
                                "pairs_per_s": rate * self.task.global_batch_size}, kind="train")
        self.progress.update(1, loss=values["loss"], lr=values["learning_rate"])

    def save(self) -> None:
        if self.step != self.last_saved:
            self.ckpts.save(self.step, self.state.checkpoint_tree(), meta=self.book.meta(self.step),
                            data_iterator=self.task.train_iter)
            self.last_saved = self.step
        self.last_save_time = time.time()

    def polled(self, guard: PreemptionGuard) -> tuple[bool, bool]:
        """(preempted, a time-based save due), the same on every process: agreed every
        ``checkpoint.sync_every_steps`` steps (a collective), every step in a single process."""
        ckpt = self.config.checkpoint
        if jax.process_count() > 1 and not itstime(self.step, ckpt.sync_every_steps):
            return False, False
        time_due = time.time() - self.last_save_time >= ckpt.every_seconds
        preempted, time_due = any_process([guard.received is not None, time_due])
        return preempted, time_due

    def end_epoch(self) -> None:
        """Validate; early stopping, the best checkpoint and the learning-rate schedule follow the validation loss."""
        book, step = self.book, self.step
        epoch = step // self.task.steps_per_epoch
        evaluated = ema.evaluated_state(self.state)  # the parameters' moving average when the optimiser keeps one
        val = self.task.validate(evaluated)
        val_loss = val["val_loss"]
        early_stop = book.early_stopping(epoch, val_loss)
        if val_loss < book.best["val_loss"]:
            book.best = {"val_loss": val_loss, "step": step, "epoch": epoch}
            self.ckpts.save_best(step, evaluated.variables, val_loss=val_loss, meta=book.meta(step))
        lr = float(get_learning_rate(self.state.opt_state))
        new_lr = book.lr_schedule(epoch, val_loss, lr)
        if new_lr != lr:
            self.state = self.state.replace(opt_state=set_learning_rate(self.state.opt_state, new_lr))
            if self.state.task_params:  # the task's own parameters follow the network's learning rate
                self.state = self.state.replace(task_opt_state=set_learning_rate(self.state.task_opt_state, new_lr))
            self.say(f"epoch {epoch}: learning rate {lr:g} -> {new_lr:g}")
        row = {"epoch": epoch, **val, "learning_rate": new_lr, "best_val_loss": book.best["val_loss"],
               "epochs_without_improvement": book.early_stopping.wait}
        book.history.append(row)
        self.log.write(step, row, kind="validation")
        self.log.plot_progress(f"{self.task.name}: {self.workdir.name}")  # flushes the logs, redraws progress.png
        self.say(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4g}" for k, v in val.items()))
        if early_stop:
            self.say(f"early stopping after epoch {epoch}: no improvement for {book.early_stopping.patience} "
                     f"epochs (best {book.best['val_loss']:.5g})")
            book.finished = "early_stopping"

    def write_preview(self) -> None:
        if self.task.preview is not None:
            self.preview_path = self.task.preview(self.state, self.step, self.log) or self.preview_path

    def run(self) -> str:
        """Train until max_steps, early stopping or preemption; returns how it stopped."""
        task, book = self.task, self.book
        sharding = batch_sharding(task.mesh)
        pending: tuple[int, Mapping[str, jax.Array]] | None = None
        with PreemptionGuard(task.name) as guard:
            if self.last_saved is not None:  # said once the signals are handled: from here a SIGTERM is graceful
                self.say(f"resumed from step {self.step} "
                         f"({self.workdir / checkpointing.CHECKPOINTS_DIR / str(self.step)})")
            else:
                self.say(f"{jax.device_count()} device(s), {jax.process_count()} process(es), global batch "
                         f"{task.global_batch_size}, {task.steps_per_epoch} steps/epoch, workdir {self.workdir}")
            first = jax.process_count() == 1  # several processes stop together, at a step boundary
            while self.step < task.max_steps and book.finished is None:
                guard.lossless = first  # the first step compiles; a signal meanwhile ends the process at once
                if first and guard.received is not None:  # a signal before the first step: nothing to save
                    self.say(f"{guard.received} received before the first step: nothing to save; exiting; rerun "
                             "the same command to resume")
                    return "preempted"
                self.state, metrics = task.train_step(self.state, global_batch(next(task.train_iter), sharding))
                guard.lossless = first = False
                self.step += 1
                crash_point("step")  # test-only (genesis_jax.workdir): a kill while a step is in flight
                self.ckpts.check()  # an asynchronous save that failed (disk full) stops training here
                if pending is not None:
                    self.handle(*pending)
                pending = (self.step, metrics)

                epoch_end = itstime(self.step, task.steps_per_epoch)
                preempted, time_due = self.polled(guard)
                save_due = (itstime(self.step, self.config.checkpoint.every_steps, task.max_steps, last=True)
                            or time_due or preempted or (epoch_end and task.save_each_epoch))
                preview_due = task.preview is not None and itstime(self.step, task.preview_every_steps)
                if not (epoch_end or save_due or preview_due):
                    continue
                self.handle(*pending)  # the finite check must precede any save of this state
                pending = None
                if epoch_end:
                    self.end_epoch()
                if preview_due:
                    self.write_preview()
                if save_due or book.finished:
                    self.save()
                    self.log.flush()
                if preempted:
                    self.say(f"{guard.received or 'preemption'} received: saved checkpoint at step {self.step}, "
                             "exiting; rerun the same command to resume")
                    return "preempted"
            if pending is not None:
                self.handle(*pending)
        self.save()
        self.write_preview()
        return book.finished or "completed"


def train(config: ml_collections.ConfigDict, workdir: Path, make_task: Callable[[bool], Task]) -> Result:
    """Run (or resume) the task ``make_task(resuming)`` builds, writing checkpoints, logs and ``weights/`` under
    ``workdir`` (the caller holds its lock, :func:`locked`). ``config`` supplies the shared blocks: schedule,
    early_stopping, optimizer.learning_rate, checkpoint, logging. A full disk stops it with one
    :class:`~genesis_jax.workdir.DiskFullError` naming the workdir."""
    with full_disk_named(workdir, "training stopped; the checkpoints written before are kept, rerun the same "
                         "command to resume"):
        return _train(config, workdir, make_task)


def _train(config: ml_collections.ConfigDict, workdir: Path, make_task: Callable[[bool], Task]) -> Result:
    primary = jax.process_index() == 0
    ckpt_cfg = config.checkpoint
    ckpts = checkpointing.TrainCheckpoints(workdir, keep=ckpt_cfg.keep, async_save=ckpt_cfg.async_save)
    log = progress = None
    try:
        task = make_task(ckpts.latest_step() is not None)
        book = _Bookkeeping(config, task.model_config, task.steps_per_epoch)
        check_fits_memory(task.model, task.tx, task.key, task.input_shape, task.mesh,
                          max(1, task.global_batch_size // jax.device_count()), task.model_config)
        resumed = ckpts.resume(lambda: abstract_train_state(task.model, task.tx, task.key, task.input_shape,
                                                            task.mesh, task_params=task.task_params), task.train_iter)
        if resumed is not None:
            state, meta = resumed
            book.load(meta, workdir)
            resumed_from: int | None = int(meta["step"])
        else:
            state = create_train_state(task.model, task.tx, task.key, task.input_shape, task.mesh,
                                       variables=task.init_variables, task_params=task.task_params)
            resumed_from = None
        log = MetricsLog(workdir, enabled=primary, resume_step=resumed_from, tensorboard=config.logging.tensorboard)
        progress = Progress(task.max_steps, int(state.step), enabled=primary and config.logging.progress,
                            messages=primary, desc=task.name)
        loop = _Loop(config, workdir, task, ckpts, log, progress, book, state, resumed_from)
        stopped = loop.run()
    finally:
        failing = sys.exc_info()[1] is not None
        if progress is not None:
            progress.close()
        ckpts.close()
        if log is not None:
            try:
                log.close()
            except OSError:
                if not failing:  # a log flush failing on the disk that stopped the run must not mask its error
                    raise
    result = Result(task=task, state=loop.state, step=loop.step, stopped=stopped, resumed_from=resumed_from, best=book.best,
                    history=book.history, last_loss=book.last_loss, preview=loop.preview_path)
    if stopped != "preempted":
        export_weights(workdir, task, result)
    return result


def export_weights(workdir: Path, task: Task, result: Result) -> None:
    """``workdir/weights``: the best-by-validation variables (``task.select_best`` and a validation ran), else the
    final ones, with BatchNorm statistics re-estimated (precise BN); fills ``result.variables/source/weights``."""
    if task.select_best and result.best["step"] is not None:
        variables, _, _ = checkpointing.load_init_weights(workdir)
        source = {"kind": "best validation loss", **result.best}
    else:
        variables = jax.tree.map(to_host, ema.evaluated_state(result.state).variables)
        source = {"kind": "final", "step": result.step}
    source.update(ema.describe(result.state))  # the best checkpoint holds the same kind (end_epoch)
    variables, source["precise_bn_batches"] = task.recalibrate(result.state, variables)
    result.variables = jax.tree.map(to_host, variables)
    result.source = source
    result.record = dict(task.export_record(result.state, result.variables)) if task.export_record else {}
    result.weights = save_weights(
        workdir / "weights", result.variables, task.model_config,
        {"source": f"genesis_jax {task.name}", "workdir": str(workdir), **source, **task.export_metadata,
         **result.record},
    )
