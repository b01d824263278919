"""Resume checkpoints of a fine-tuning run: the train state (step, params, BatchNorm statistics, optimiser state)
and the host-side loop state (plateau and early-stopping counters, history), in ``<workdir>/checkpoints/latest``.

The state is written through the weights-directory format of :mod:`genesis_jax.train.checkpointing` (the only
orbax user) as a flax state dict, into a temporary directory that then replaces ``latest`` by rename, so a crash
while writing leaves the previous checkpoint intact. Training batches are a function of (seed, step), so the step
is all the data pipeline needs to resume exactly.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization

from genesis_jax.train.checkpointing import is_weights_dir, load_weights, save_weights

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"


def save(workdir: Path, state: Any, loop_state: dict[str, Any]) -> Path:
    """Write ``state`` and ``loop_state`` as the latest checkpoint of ``workdir``; returns its directory."""
    root = Path(workdir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    step = int(state.step)
    tmp = root / f".writing-{step}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tree = jax.tree.map(np.asarray, serialization.to_state_dict(state))
    save_weights(tmp, {"state": tree}, {"kind": "finetune_train_state"}, {"step": step, "loop": loop_state})
    latest, old = root / LATEST, root / ".previous"
    if old.exists():
        shutil.rmtree(old)
    if latest.exists():
        latest.rename(old)
    tmp.rename(latest)
    if old.exists():
        shutil.rmtree(old)
    return latest


def restore_latest(workdir: Path, template: Any) -> tuple[Any, dict[str, Any]] | None:
    """(state shaped like ``template``, loop state) from the latest checkpoint, or None when there is none."""
    root = Path(workdir) / CHECKPOINT_DIR
    latest = root / LATEST
    if not is_weights_dir(latest) and is_weights_dir(root / ".previous"):
        latest = root / ".previous"  # a crash between the two renames of save()
    if not is_weights_dir(latest):
        return None
    variables, _, metadata = load_weights(latest)
    target = serialization.to_state_dict(template)
    restored = _fill(target, variables["state"])
    state = serialization.from_state_dict(template, restored)
    state = jax.tree.map(lambda t, r: jax.numpy.asarray(r, dtype=np.asarray(t).dtype), template, state)
    return state, metadata["loop"]


def _fill(target: Any, source: Any) -> Any:
    """``target``'s structure with ``source``'s arrays; containers the checkpoint dropped (empty ones) stay empty."""
    if isinstance(target, dict):
        source = source if isinstance(source, dict) else {}
        return {k: _fill(v, source.get(k, source.get(str(k)))) for k, v in target.items()}
    if source is None:
        raise ValueError(f"checkpoint is missing an array of shape {np.shape(target)} that the train state has")
    return source
