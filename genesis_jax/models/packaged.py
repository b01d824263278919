"""Weights that ship inside the package: small pre-trained networks for a first run on a CPU (the demo's).

A packaged network is two files in ``genesis_jax/models/packaged_weights/``: ``<name>.npz`` (every variable, keyed
by its '/'-joined path) and ``<name>.json`` (the model config, the exporting run's metadata with its restoration
quality gate, and how it was made), plus ``<name>_preview.png``, the run's last restoration preview on its held-out
scan. npz, not the orbax directory, because package data must be plain files that a wheel carries anywhere.
:func:`materialize` turns one back into an ordinary weights directory (:mod:`genesis_jax.models.weights`), so
every command reads it through the one format; ``experiments/demo_pretraining.py`` is the committed script that
writes them (:func:`package_weights`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util

from genesis_jax.models.weights import CheckpointError, load_weights, save_weights
from genesis_jax.workdir import write_file_atomically

PACKAGED_DIR = Path(__file__).resolve().parent / "packaged_weights"
PREVIEW_SUFFIX = "_preview.png"


def available() -> list[str]:
    """Names of the packaged networks."""
    return sorted(p.stem for p in PACKAGED_DIR.glob("*.json"))


def _files(name: str) -> tuple[Path, Path]:
    arrays, record = PACKAGED_DIR / f"{name}.npz", PACKAGED_DIR / f"{name}.json"
    if not (arrays.is_file() and record.is_file()):
        raise CheckpointError(f"no packaged weights named {name!r} in {PACKAGED_DIR}; available: {available()}")
    return arrays, record


def record(name: str) -> dict[str, Any]:
    """The packaged network's record: {'model_config', 'metadata' (with its gate), 'made_by'}."""
    return json.loads(_files(name)[1].read_text())


def preview(name: str) -> Path | None:
    """The restoration preview the exporting run drew on its held-out scan, if packaged."""
    path = PACKAGED_DIR / f"{name}{PREVIEW_SUFFIX}"
    return path if path.is_file() else None


def materialize(name: str, directory: str | Path) -> Path:
    """Write the packaged network ``name`` as a weights directory at ``directory`` (what ``--init`` reads)."""
    arrays, _ = _files(name)
    info = record(name)
    with np.load(arrays) as npz:
        flat = {tuple(key.split("/")): npz[key] for key in npz.files}
    variables = traverse_util.unflatten_dict(flat)
    metadata = {**info["metadata"], "packaged": name, "made_by": info.get("made_by", "")}
    return save_weights(directory, variables, info["model_config"], metadata)


def package_weights(weights_dir: str | Path, name: str, made_by: str, preview_png: str | Path | None = None,
                    directory: Path = PACKAGED_DIR) -> Path:
    """Pack a weights directory as the packaged network ``name`` (npz + json [+ preview]); returns the npz path."""
    variables, model_config, metadata = load_weights(weights_dir)
    flat = traverse_util.flatten_dict(variables, sep="/")
    directory.mkdir(parents=True, exist_ok=True)
    npz = directory / f"{name}.npz"
    tmp = npz.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **{k: np.asarray(v) for k, v in flat.items()})
    tmp.replace(npz)
    info = {"model_config": model_config, "metadata": {k: v for k, v in metadata.items() if k != "workdir"},
            "made_by": made_by}
    write_file_atomically(directory / f"{name}.json", (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())
    if preview_png is not None:
        shutil.copyfile(preview_png, directory / f"{name}{PREVIEW_SUFFIX}")
    return npz
