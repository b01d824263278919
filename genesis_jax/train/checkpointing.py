"""Training checkpoints: with :mod:`genesis_jax.models.weights` (the weights directory) one of the two modules that
import orbax.

Training runs (:class:`TrainCheckpoints`) keep two orbax ``CheckpointManager`` directories in the workdir::

    <workdir>/checkpoints/<step>/state   the whole train state (params, batch_stats, opt_state, step, rng)
                                /data    the grain iterator state, one file per process
                                /meta    JSON: step, epoch, config, model config, schedule and early-stopping state
    <workdir>/best/<step>/variables      {'params', 'batch_stats'} of the best validation loss so far
                         /meta           JSON as above plus the validation loss

``checkpoints/`` keeps the latest N (periodic by steps and by time, on SIGTERM, at the end); ``best/`` keeps one.
Resuming rolls the workdir back to the restored step: a ``best/`` step after it (written before a crash) is
discarded, since the rerun recomputes it. A latest checkpoint that cannot be restored is moved to
``corrupt_checkpoints/`` with a warning and the one before it is used; an intact one that holds another state than
the config builds (another network, a pretext's own parameters added or dropped) is refused with one line and kept.
A failed write (disk full) raises :class:`CheckpointError` with one line ("no space left on <path>"); the
checkpoints before it stay usable. A background write that fails is raised by the next
:meth:`TrainCheckpoints.check` (the loop calls it every step). Saves are asynchronous: the arrays are copied to the
host when ``save`` returns, written in the background. The state is restored into an abstract target that carries
the CURRENT mesh's shardings, so a run saved on 8 devices resumes on 1 and the reverse.

``--init`` also accepts a training workdir (:func:`load_init_weights`: its best checkpoint, else its latest) besides
a weights directory (:mod:`genesis_jax.models.weights`, the other owner of orbax: one module per on-disk format).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from genesis_jax.config_loader import ConfigError
from genesis_jax.models.weights import (
    MODEL_CONFIG_FILE,
    VARIABLES_DIR,
    CheckpointError,
    is_weights_dir,
    load_weights,
    to_numpy,
)
from genesis_jax.workdir import crash_point, is_disk_full, silence_background_threads

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
CORRUPT_DIR = "corrupt_checkpoints"
STATE_ITEM, DATA_ITEM, META_ITEM, VARIABLES_ITEM = "state", "data", "meta", "variables"


class _QuietOrbax(logging.Filter):
    """Drops orbax's own logged tracebacks of a failed background save (the failure is raised once, as one line)
    and keeps the first such error: orbax's finaliser logs it and skips the step's commit without raising anywhere,
    so this is how the training loop learns at its next step that an asynchronous save failed."""

    def __init__(self) -> None:
        super().__init__()
        self.failure: BaseException | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and "orbax" in record.pathname and record.levelno >= logging.ERROR:
            if self.failure is None and record.exc_info[1] is not None:
                self.failure = record.exc_info[1]
            return False
        return True


class TrainCheckpoints:
    """The latest-N and best-by-validation checkpoints of one training workdir (see the module docstring).

    Every process of a multi-host run must make the same calls in the same order (orbax synchronises them).
    Only one process writes a workdir at a time (the caller holds :func:`genesis_jax.workdir.hold`), so left-over
    temporary directories of a killed save are removed on opening.
    """

    def __init__(self, workdir: str | Path, *, keep: int = 3, async_save: bool = True):
        self.workdir = Path(workdir).expanduser().resolve()
        self._keep, self._async = max(int(keep), 1), async_save
        self._failed: CheckpointError | None = None
        self._pending_step: int | None = None  # the step of the last save issued (what a background failure lost)
        self._quiet = _QuietOrbax()
        for name in ("absl", "orbax"):
            # first in line: a filter that drops the record before this one would hide the failure from check()
            logging.getLogger(name).filters.insert(0, self._quiet)
        self._open()

    def _open(self) -> None:
        latest_options = ocp.CheckpointManagerOptions(
            max_to_keep=self._keep, enable_async_checkpointing=self._async, create=True, cleanup_tmp_directories=True
        )
        best_options = ocp.CheckpointManagerOptions(
            max_to_keep=1, best_fn=lambda m: m["val_loss"], best_mode="min", keep_checkpoints_without_metrics=False,
            enable_async_checkpointing=self._async, create=True, cleanup_tmp_directories=True,
        )
        self.latest = ocp.CheckpointManager(self.workdir / CHECKPOINTS_DIR, options=latest_options)
        self.best = ocp.CheckpointManager(self.workdir / BEST_DIR, options=best_options)

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def best_step(self) -> int | None:
        return self.best.best_step()

    def _guard(self, what: str, action: Callable[[], Any]) -> Any:
        """Run a save/wait; a failure of this or an earlier background write becomes one CheckpointError."""
        if self._failed is not None:
            raise self._failed
        try:
            return action()
        except Exception as err:  # noqa: BLE001 (orbax re-raises a background write's error at the next save/wait)
            kept = self._last_intact()
            where = f"the last intact checkpoint is step {kept}" if kept is not None else "no checkpoint was kept"
            if is_disk_full(err):
                self._failed = CheckpointError(
                    f"no space left on {self.workdir}: {what} failed; {where}. Free space and rerun the same command "
                    "to resume")
            else:
                self._failed = CheckpointError(f"{self.workdir}: {what} failed ({type(err).__name__}: "
                                               f"{str(err).splitlines()[0] if str(err) else ''}); {where}")
            silence_background_threads()
            raise self._failed from None

    def check(self) -> None:
        """Raise the one-line CheckpointError at once when an asynchronous save has failed since the last call (a
        full disk mid-write): training stops at the next step instead of running on to its next save."""
        failure = self._quiet.failure
        if self._failed is None and failure is not None:
            self._quiet.failure = None

            def reraise() -> None:
                raise failure

            self._guard(f"writing the checkpoint of step {self._pending_step}", reraise)

    def _last_intact(self) -> int | None:
        root = self.workdir / CHECKPOINTS_DIR  # finished steps are plain integer names; in-flight ones have suffixes
        steps = [int(p.name) for p in root.iterdir() if p.name.isdigit()] if root.is_dir() else []
        return max(steps) if steps else None

    def save(
        self, step: int, state_tree: Any, *, meta: Mapping[str, Any], data_iterator: Any = None
    ) -> None:
        """Save the train state, the data iterator's position and ``meta`` (JSON-able) as checkpoint ``step``."""
        items = {STATE_ITEM: ocp.args.StandardSave(state_tree), META_ITEM: ocp.args.JsonSave(_jsonable(meta))}
        if data_iterator is not None:
            items[DATA_ITEM] = grain.checkpoint.CheckpointSave(data_iterator)
        self._pending_step = step
        self._guard(f"writing the checkpoints up to step {step}",
                    lambda: self.latest.save(step, args=ocp.args.Composite(**items), force=True))
        crash_point("periodic_save")  # test-only: the write is still in flight here

    def restore(
        self, abstract_state: Any, *, data_iterator: Any = None, step: int | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Restore checkpoint ``step`` (default: the latest intact one: a latest one that cannot be restored is
        moved to ``corrupt_checkpoints/`` with a warning and the one before is tried) into ``abstract_state``
        (ShapeDtypeStructs with the target shardings) and, when given, move ``data_iterator`` to the saved position.
        Returns (state, meta)."""
        if step is not None:
            return self._restore(step, abstract_state, data_iterator)
        while (latest := self.latest_step()) is not None:
            self._check_written_alike(latest, abstract_state)
            try:
                return self._restore(latest, abstract_state, data_iterator)
            except CheckpointError as err:
                if len(self.latest.all_steps()) < 2:
                    raise CheckpointError(f"{err}. It is the only checkpoint: move it away (mv "
                                          f"{self.workdir / CHECKPOINTS_DIR / str(latest)} /somewhere/else) to "
                                          "start afresh") from None
                self._discard(latest, str(err).splitlines()[0][:200])
        raise CheckpointError(f"{self.workdir / CHECKPOINTS_DIR}: no checkpoint to restore")

    def _check_written_alike(self, step: int, abstract_state: Mapping[str, Any]) -> None:
        """Refuse, with one line and WITHOUT discarding anything, a checkpoint that is intact but holds another
        state than this config builds (another network, or a pretext's own parameters added or dropped, e.g.
        ``pretext.mask_fill`` changed): it is not damaged, the config is. Unreadable metadata is left to the
        restore (a damaged checkpoint)."""
        state_dir = self.workdir / CHECKPOINTS_DIR / str(step) / STATE_ITEM
        try:
            saved = ocp.StandardCheckpointHandler().metadata(state_dir)
            saved_fields = set(saved.keys())
        except Exception:  # noqa: BLE001 (any unreadable metadata: the restore reports or discards it)
            return

        def shapes(tree: Any) -> dict[str, tuple[int, ...]]:
            return {jax.tree_util.keystr(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}

        differ = sorted(saved_fields ^ set(abstract_state))
        for field in sorted(saved_fields & set(abstract_state) & {"params", "task_params"}):
            got, want = shapes(saved[field]), shapes(abstract_state[field])
            differ += [f"{field}{k}" for k in sorted(set(got) | set(want)) if got.get(k) != want.get(k)]
        if differ:
            raise ConfigError(f"{state_dir.parent}: this checkpoint holds another train state than the config builds "
                              f"(differing: {', '.join(differ[:4])}{' ...' if len(differ) > 4 else ''}); resume with "
                              "the config it was written with, or give another --workdir")

    def _restore(self, step: int, abstract_state: Any, data_iterator: Any) -> tuple[Any, dict[str, Any]]:
        step_dir = self.workdir / CHECKPOINTS_DIR / str(step)
        items = {STATE_ITEM: ocp.args.StandardRestore(abstract_state), META_ITEM: ocp.args.JsonRestore()}
        if data_iterator is not None:
            if not (step_dir / DATA_ITEM).is_dir():
                raise CheckpointError(f"{step_dir}: holds no data iterator state; cannot resume the input pipeline")
            items[DATA_ITEM] = grain.checkpoint.CheckpointRestore(data_iterator)
        try:
            restored = self.latest.restore(step, args=ocp.args.Composite(**items))
        except Exception as err:  # orbax raises several types for a damaged or incompatible checkpoint
            raise CheckpointError(f"{step_dir}: cannot restore the train state: {err}") from err
        return restored[STATE_ITEM], dict(restored[META_ITEM])

    def _discard(self, step: int, reason: str) -> None:
        """Move checkpoint ``step`` out of ``checkpoints/`` (kept for inspection) and reopen the managers."""
        target = self.workdir / CORRUPT_DIR / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        target.parent.mkdir(parents=True, exist_ok=True)
        self.latest.close()
        self.best.close()
        if jax.process_index() == 0:
            os.replace(self.workdir / CHECKPOINTS_DIR / str(step), target)
        if jax.process_count() > 1:  # every process reopens after the move
            ocp.multihost.sync_global_processes(f"genesis_jax_discard_{step}")
        self._open()
        log.warning("checkpoint step %d cannot be restored (%s); moved it to %s, trying step %s", step, reason,
                    target, self.latest_step())

    def resume(self, abstract_state: Callable[[], Any], data_iterator: Any = None) -> tuple[Any, dict[str, Any]] | None:
        """Restore the latest intact checkpoint into ``abstract_state()`` (a TrainState of ShapeDtypeStructs, built
        only when there is one) and roll the workdir back to its step (:meth:`roll_back_to`). Returns
        (state, meta), or None on a fresh start, after discarding a ``best/`` left by a run killed before its
        first periodic checkpoint."""
        if self.latest_step() is None:
            self.roll_back_to(None)
            return None
        abstract = abstract_state()
        tree, meta = self.restore(abstract.checkpoint_tree(), data_iterator=data_iterator)
        self.roll_back_to(int(meta["step"]))
        return abstract.with_checkpoint_tree(tree), meta

    def roll_back_to(self, step: int | None) -> None:
        """Discard the ``best/`` steps after ``step`` (all with None): a run killed after saving them resumes from
        an earlier state and recomputes them, and orbax refuses to write a step that exists."""
        for s in self.best.all_steps():
            if step is None or s > step:
                self.best.delete(s)
        self.best.reload()

    def save_best(self, step: int, variables: Mapping[str, Any], *, val_loss: float, meta: Mapping[str, Any]) -> None:
        """Keep ``variables`` as the best checkpoint when ``val_loss`` beats the one kept so far."""
        items = {
            VARIABLES_ITEM: ocp.args.StandardSave(to_numpy(dict(variables))),
            META_ITEM: ocp.args.JsonSave(_jsonable({**meta, "val_loss": float(val_loss)})),
        }
        self._pending_step = step
        self._guard(f"writing the checkpoints up to step {step}", lambda: self.best.save(
            step, args=ocp.args.Composite(**items), metrics={"val_loss": float(val_loss)}, force=True))
        crash_point("best", before=self.best.wait_until_finished)  # test-only: right after best/<step> is committed

    def wait(self) -> None:
        """Block until every pending asynchronous save is on disk."""
        self._guard("writing the last checkpoints", lambda: (self.latest.wait_until_finished(),
                                                     self.best.wait_until_finished()))

    def close(self) -> None:
        """Finish pending saves and release the managers; after a failed save only the release (the error was
        raised already)."""
        try:
            if self._failed is None:
                self.wait()
        finally:
            for manager in (self.latest, self.best):
                try:
                    manager.close()
                except Exception as err:  # noqa: BLE001 (the write failure was reported once; must not be masked)
                    log.debug("closing %s after a failed save: %s", manager.directory, err)
            if self._failed is None:  # after a failure orbax's threads may still log its traceback while we exit
                for name in ("absl", "orbax"):
                    logging.getLogger(name).removeFilter(self._quiet)


def _jsonable(tree: Any) -> Any:
    return json.loads(json.dumps(tree, default=lambda o: o.tolist() if hasattr(o, "tolist") else list(o)))


def _numpy_target(item_metadata: Any) -> Any:
    tree = getattr(item_metadata, "tree", item_metadata)
    return jax.tree.map(lambda m: np.empty(m.shape, m.dtype), tree)


def _restore_item_as_numpy(manager: ocp.CheckpointManager, step: int, item: str) -> tuple[Any, dict[str, Any]]:
    target = _numpy_target(manager.item_metadata(step)[item])
    restored = manager.restore(
        step, args=ocp.args.Composite(**{item: ocp.args.StandardRestore(target), META_ITEM: ocp.args.JsonRestore()})
    )
    return restored[item], dict(restored[META_ITEM])


def is_train_workdir(path: str | Path) -> bool:
    path = Path(path)
    return (path / CHECKPOINTS_DIR).is_dir() or (path / BEST_DIR).is_dir()


def load_init_weights(path: str | Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Weights for ``--init``: a weights directory (:func:`load_weights`) or a training workdir, whose best
    checkpoint is taken, else its latest. Returns (variables {'params', 'batch_stats'}, model_config, metadata)."""
    path = Path(path).expanduser().resolve()
    if is_weights_dir(path):
        return load_weights(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such weights directory or training workdir")
    if not is_train_workdir(path):
        raise CheckpointError(
            f"{path}: neither a weights directory ({MODEL_CONFIG_FILE} + {VARIABLES_DIR}/) nor a training workdir "
            f"({CHECKPOINTS_DIR}/ or {BEST_DIR}/)"
        )
    for sub, item in ((BEST_DIR, VARIABLES_ITEM), (CHECKPOINTS_DIR, STATE_ITEM)):
        if not (path / sub).is_dir():
            continue
        manager = ocp.CheckpointManager(
            path / sub,
            options=ocp.CheckpointManagerOptions(create=False),
            item_handlers={item: ocp.StandardCheckpointHandler(), META_ITEM: ocp.JsonCheckpointHandler()},
        )
        step = manager.latest_step()
        if step is None:
            continue
        try:
            tree, meta = _restore_item_as_numpy(manager, step, item)
        except Exception as err:
            raise CheckpointError(f"{path / sub / str(step)}: cannot restore the weights: {err}") from err
        finally:
            manager.close()
        variables = {"params": tree["params"], "batch_stats": tree.get("batch_stats") or {}}
        metadata = {"source": str(path / sub / str(step)), "step": step, **{k: v for k, v in meta.items() if k in (
            "epoch", "val_loss")}}
        return variables, dict(meta.get("model_config") or {}), metadata
    raise CheckpointError(f"{path}: the training workdir holds no finished checkpoint yet")
