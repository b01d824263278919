"""Checkpoints: the only module that imports orbax.

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

import jax
import numpy as np
import orbax.checkpoint as ocp

MODEL_CONFIG_FILE = "model_config.json"
METADATA_FILE = "metadata.json"
VARIABLES_DIR = "variables"


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
    model_config = json.loads((directory / MODEL_CONFIG_FILE).read_text())
    metadata_path = directory / METADATA_FILE
    metadata = json.loads(metadata_path.read_text()) if metadata_path.is_file() else {}
    return _to_numpy(variables), model_config, metadata
