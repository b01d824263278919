"""The weights directory: the one format every command exchanges (pre-training exports it, ``genesis-jax convert``
writes it, ``--init`` of pre-training, fine-tuning and active learning and ``genesis-jax evaluate`` read it)::

    <dir>/model_config.json     the ``config.model`` section that builds the network (genesis_jax.models)
    <dir>/variables/            orbax checkpoint of {'params': ..., 'batch_stats': ...} (numpy arrays)
    <dir>/metadata.json         free-form provenance (source file, converter, step, ...)
    <dir>/adaptation.json       which parameters are encoder, stem and heads (``AdaptationRecord``), for ``--init``

It is written beside the target and swapped into place (:func:`genesis_jax.workdir.replace_directory`), so a
crash during a re-export leaves the old weights or the new ones; a reader takes no lock and gets one export whole
(:func:`load_weights` reads again when the directory was swapped during its read).

orbax has two owners, one per format: this module for the weights directory, and
:mod:`genesis_jax.train.checkpointing` for training checkpoints (train state, iterator state, best-by-validation),
which also reads a training workdir as ``--init`` weights.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from genesis_jax.models.registry import adaptation_record
from genesis_jax.models.spec import AdaptationRecord
from genesis_jax.workdir import crash_point, hold_background_output, is_disk_full, replace_directory, \
    sibling_tmp_dir, silence_background_threads

MODEL_CONFIG_FILE = "model_config.json"
METADATA_FILE = "metadata.json"
ADAPTATION_FILE = "adaptation.json"
VARIABLES_DIR = "variables"


class CheckpointError(ValueError):
    """A checkpoint or weights directory that is missing, incomplete or of another format; the message names the
    path."""


def to_numpy(tree: Any) -> Any:
    """Every leaf of ``tree`` as a host numpy array (what the weights directory stores)."""
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
    primary, multi = jax.process_index() == 0, jax.process_count() > 1
    if multi:  # orbax writes collectively: every process needs the same directory (the workdir lock is held)
        tmp = directory.with_name(f".{directory.name}.tmp-shared")
        if primary:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        ocp.multihost.sync_global_processes("genesis_jax_save_weights_start")
    else:
        tmp = sibling_tmp_dir(directory)
    try:
        with hold_background_output():  # orbax's threads may print a traceback before the main thread sees ENOSPC
            checkpointer = ocp.StandardCheckpointer()
            checkpointer.save(tmp / VARIABLES_DIR, to_numpy(dict(variables)), force=True)
            checkpointer.wait_until_finished()
        if primary:
            (tmp / MODEL_CONFIG_FILE).write_text(json.dumps(dict(model_config), indent=2, sort_keys=True,
                                                            default=list))
            crash_point("export")
            record = _record_of(model_config)
            if record is not None:
                (tmp / ADAPTATION_FILE).write_text(json.dumps(record.as_dict(), indent=2))
            (tmp / METADATA_FILE).write_text(json.dumps(dict(metadata or {}), indent=2, sort_keys=True, default=str))
            replace_directory(tmp, directory)
        if multi:
            ocp.multihost.sync_global_processes("genesis_jax_save_weights_done")
        return directory
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(err):
            silence_background_threads()  # orbax's writer threads go on failing while the command exits
            raise CheckpointError(f"no space left on {directory}: the weights were not exported (the previous "
                                  "ones, if any, are kept); free space and rerun") from None
        raise


def _record_of(model_config: Mapping[str, Any]) -> AdaptationRecord | None:
    """The adaptation record of a model config; None for a config that names no registered network (nothing can
    build it, so nothing can transfer from it either)."""
    try:
        return adaptation_record(model_config)
    except ValueError:
        return None


def init_adaptation_record(path: str | Path, model_config: Mapping[str, Any]) -> tuple[AdaptationRecord, str]:
    """The record ``--init`` maps a source by: a weights directory's ``adaptation.json``, else (weights exported
    before records existed, or a training workdir) the spec of ``model_config``'s network. Returns (record, where
    it came from); a ValueError naming the path when neither exists."""
    file = Path(path).expanduser() / ADAPTATION_FILE
    if file.is_file():
        try:
            return AdaptationRecord.from_dict(_read_json(file), file), str(file)
        except ValueError as err:
            raise CheckpointError(str(err)) from None
    try:
        return adaptation_record(model_config), f"the {model_config.get('name')!r} network spec"
    except ValueError as err:
        raise CheckpointError(f"{path}: no {ADAPTATION_FILE} and its model config builds no network: {err}") from None


def is_weights_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / MODEL_CONFIG_FILE).is_file() and (path / VARIABLES_DIR).is_dir()


def _identity(directory: Path) -> tuple[int, int, int] | None:
    """What changes when :func:`save_weights` swaps a new export in at ``directory``: another directory (inode)."""
    try:
        st = os.stat(directory)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_ctime_ns


def load_weights(directory: str | Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Read a weights directory written by :func:`save_weights`: returns (variables, model_config, metadata),
    variables as numpy arrays on the host.

    Readers take no lock: a re-export (a pre-training's end, ``convert --overwrite``) swaps a new directory in at
    any moment, and orbax reads a directory as several files by path. So the read is versioned by the directory's
    identity: when it changed during the read (an error, or files of two exports), the read starts again on the
    new export, so a reader gets one export whole, the old or the new."""
    directory = Path(directory).expanduser().resolve()
    for attempt in range(_READ_ATTEMPTS):
        before = _identity(directory)
        try:
            loaded = _load_weights_once(directory)
        except CheckpointError:
            if _identity(directory) == before or attempt == _READ_ATTEMPTS - 1:
                raise
            continue
        if _identity(directory) == before:
            return loaded
    raise CheckpointError(f"{directory}: replaced {_READ_ATTEMPTS} times while being read; rerun when the export "
                          "that keeps rewriting it has finished")


_READ_ATTEMPTS = 20


def _load_weights_once(directory: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
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
    return to_numpy(variables), model_config, metadata


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``metadata.json`` of a weights directory, or of a training workdir's exported ``weights/``, without
    loading any array; {} when there is none (e.g. a workdir that has not exported yet)."""
    path = Path(path).expanduser()
    for directory in (path, path / "weights"):
        if is_weights_dir(directory) and (directory / METADATA_FILE).is_file():
            return _read_json(directory / METADATA_FILE)
    return {}


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object file of a weights directory; a damaged one raises CheckpointError naming it."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value
