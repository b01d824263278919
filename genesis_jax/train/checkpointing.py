"""Checkpoints: the only module that imports orbax.

Training runs (:class:`TrainCheckpoints`) keep two orbax ``CheckpointManager`` directories in the workdir::

    <workdir>/checkpoints/<step>/state   the whole train state (params, batch_stats, opt_state, step, rng)
                                /data    the grain iterator state, one file per process
                                /meta    JSON: step, epoch, config, model config, schedule and early-stopping state
    <workdir>/best/<step>/variables      {'params', 'batch_stats'} of the best validation loss so far
                         /meta           JSON as above plus the validation loss

``checkpoints/`` keeps the latest N (periodic by steps and by time, on SIGTERM, at the end); ``best/`` keeps one.
Saves are asynchronous: the arrays are copied to the host when ``save`` returns, written in the background. The
state is restored into an abstract target that carries the CURRENT mesh's shardings, so a run saved on 8 devices
resumes on 1 and the reverse.

Model weights are exchanged in one directory format, written by pre-training exports, by the weight converter
(``genesis-jax convert``) and read by ``--init`` in pre-training, fine-tuning and evaluation::

    <dir>/model_config.json     the ``config.model`` section that builds the network (genesis_jax.models)
    <dir>/variables/            orbax checkpoint of {'params': ..., 'batch_stats': ...} (numpy arrays)
    <dir>/metadata.json         free-form provenance (source file, converter, step, ...)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

MODEL_CONFIG_FILE = "model_config.json"
METADATA_FILE = "metadata.json"
VARIABLES_DIR = "variables"

CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
STATE_ITEM, DATA_ITEM, META_ITEM, VARIABLES_ITEM = "state", "data", "meta", "variables"


class CheckpointError(ValueError):
    """A checkpoint directory that is missing, incomplete or of another format; the message names the path."""


def _to_numpy(tree: Any) -> Any:
    return jax.tree.map(lambda x: np.asarray(x), tree)


def save_weights(
    directory: str | Path,
    variables: Mapping[str, Any],
    model_config: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``variables`` ({'params', 'batch_stats'?}) and the model config to ``directory`` (created; an
    existing weights directory there is replaced). Returns the directory."""
    directory = Path(directory).expanduser().resolve()
    directory.mkdir(parents=True, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(directory / VARIABLES_DIR, _to_numpy(dict(variables)), force=True)
    checkpointer.wait_until_finished()
    (directory / MODEL_CONFIG_FILE).write_text(json.dumps(dict(model_config), indent=2, sort_keys=True, default=list))
    (directory / METADATA_FILE).write_text(json.dumps(dict(metadata or {}), indent=2, sort_keys=True, default=str))
    return directory


def is_weights_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / MODEL_CONFIG_FILE).is_file() and (path / VARIABLES_DIR).is_dir()


def load_weights(directory: str | Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Read a weights directory written by :func:`save_weights`: returns (variables, model_config, metadata),
    variables as numpy arrays on the host."""
    directory = Path(directory).expanduser().resolve()
    if not directory.exists():
        raise CheckpointError(f"{directory}: no such checkpoint directory")
    if not is_weights_dir(directory):
        raise CheckpointError(
            f"{directory}: not a genesis_jax weights directory (expected {MODEL_CONFIG_FILE} and {VARIABLES_DIR}/)"
        )
    try:
        variables = ocp.StandardCheckpointer().restore(directory / VARIABLES_DIR)
    except Exception as err:  # orbax raises several types for a damaged checkpoint
        raise CheckpointError(f"{directory / VARIABLES_DIR}: cannot restore the weights: {err}") from err
    model_config = _read_json(directory / MODEL_CONFIG_FILE)
    metadata_path = directory / METADATA_FILE
    metadata = _read_json(metadata_path) if metadata_path.is_file() else {}
    return _to_numpy(variables), model_config, metadata


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object file of a weights directory; a damaged one raises CheckpointError naming it."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


class TrainCheckpoints:
    """The latest-N and best-by-validation checkpoints of one training workdir (see the module docstring).

    Every process of a multi-host run must make the same calls in the same order (orbax synchronises them).
    """

    def __init__(self, workdir: str | Path, *, keep: int = 3, async_save: bool = True):
        self.workdir = Path(workdir).expanduser().resolve()
        latest_options = ocp.CheckpointManagerOptions(
            max_to_keep=max(int(keep), 1), enable_async_checkpointing=async_save, create=True
        )
        best_options = ocp.CheckpointManagerOptions(
            max_to_keep=1, best_fn=lambda m: m["val_loss"], best_mode="min", keep_checkpoints_without_metrics=False,
            enable_async_checkpointing=async_save, create=True,
        )
        self.latest = ocp.CheckpointManager(self.workdir / CHECKPOINTS_DIR, options=latest_options)
        self.best = ocp.CheckpointManager(self.workdir / BEST_DIR, options=best_options)

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def best_step(self) -> int | None:
        return self.best.best_step()

    def save(
        self, step: int, state_tree: Any, *, meta: Mapping[str, Any], data_iterator: Any = None
    ) -> None:
        """Save the train state, the data iterator's position and ``meta`` (JSON-able) as checkpoint ``step``."""
        items = {STATE_ITEM: ocp.args.StandardSave(state_tree), META_ITEM: ocp.args.JsonSave(_jsonable(meta))}
        if data_iterator is not None:
            items[DATA_ITEM] = grain.checkpoint.CheckpointSave(data_iterator)
        self.latest.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(
        self, abstract_state: Any, *, data_iterator: Any = None, step: int | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Restore checkpoint ``step`` (default: the latest) into ``abstract_state`` (ShapeDtypeStructs with the
        target shardings) and, when given, move ``data_iterator`` to the saved position. Returns (state, meta)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{self.workdir / CHECKPOINTS_DIR}: no checkpoint to restore")
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

    def save_best(self, step: int, variables: Mapping[str, Any], *, val_loss: float, meta: Mapping[str, Any]) -> None:
        """Keep ``variables`` as the best checkpoint when ``val_loss`` beats the one kept so far."""
        items = {
            VARIABLES_ITEM: ocp.args.StandardSave(_to_numpy(dict(variables))),
            META_ITEM: ocp.args.JsonSave(_jsonable({**meta, "val_loss": float(val_loss)})),
        }
        self.best.save(step, args=ocp.args.Composite(**items), metrics={"val_loss": float(val_loss)}, force=True)

    def wait(self) -> None:
        """Block until every pending asynchronous save is on disk."""
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self.latest.close()
        self.best.close()


def _jsonable(tree: Any) -> Any:
    return json.loads(json.dumps(tree, default=lambda o: o.tolist() if hasattr(o, "tolist") else list(o)))


def _numpy_target(item_metadata: Any) -> Any:
    tree = getattr(item_metadata, "tree", item_metadata)
    return jax.tree.map(lambda m: np.empty(m.shape, m.dtype), tree)


def _restore_item_as_numpy(manager: "ocp.CheckpointManager", step: int, item: str) -> tuple[Any, dict[str, Any]]:
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
