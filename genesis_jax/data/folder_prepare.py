"""``genesis-jax data prepare --dataset=DIR``: a dataset folder's volumes prepared once, its split file and the record
of the settings, and the cube datasets pre-training cuts from those volumes.

``prepare_folder(data_config)`` reads the folder (:mod:`genesis_jax.data.folders`), resolves what the folder says
(the modality from ``channel_names`` when ``modality='auto'``, the label names from ``dataset.json``), reads the
split file (or draws one by case with ``validation_fraction`` and ``seed`` and writes it), builds the
``dataset_volumes`` TFDS dataset and writes the record (``prepared.json``): the resolved data block that every
later command given ``--dataset`` uses as its ``config.data``. An edited split file is honoured: the volumes are
rebuilt with it (the summary says so). ``cube_data_block(record, cubes)`` is the ``dataset_cubes`` block for one
cube rule, named after the rule so every rule has its own prepared cubes.
"""

from __future__ import annotations

import json
import logging
import zlib
from typing import Any

import ml_collections

from genesis_jax.data.builders import DatasetError, make_builder, settings_diff
from genesis_jax.data.folders import SPLIT_FILE, draw_split, read_folder, read_split_file, record_dir, \
    unlabelled_cases, write_record
from genesis_jax.data.prepare import PrepareSummary, prepare

log = logging.getLogger(__name__)

# Fields of a dataset folder's volume block that only pre-training cubes use: not part of the volume dataset.
_CUBE_ONLY = ("cubes",)


def volume_block(data_config, folder) -> ml_collections.ConfigDict:
    """``data_config`` resolved against ``folder``: builder, name, manual_dir, modality, labels (a plain copy)."""
    data = ml_collections.ConfigDict({k: v for k, v in data_config.to_dict().items() if k not in _CUBE_ONLY})
    data.builder = "dataset_volumes"
    data.storage = "tfds"
    data.manual_dir = str(folder.root)
    data.name = data.name if data.name not in ("", "auto") else folder.name
    channel = int(data.get("channel", 0))
    if channel not in folder.channel_names:
        raise DatasetError(f"config.data.channel={channel}: {folder.root} has channels "
                           f"{sorted(folder.channel_names)} ({folder.channel_names})")
    if data.modality == "auto":
        data.modality = folder.modality(channel)
    data.labels = dict(folder.labels)
    return data


def prepare_folder(data_config) -> tuple[PrepareSummary, dict[str, Any]]:
    """Prepare the folder ``data_config.manual_dir`` names; returns (the summary, the record written)."""
    folder = read_folder(data_config.manual_dir)
    data = volume_block(data_config, folder)
    directory = record_dir(data.data_dir, data.name)
    split_path = directory / SPLIT_FILE
    notes = []
    if split_path.is_file():
        split = read_split_file(split_path, folder)
        notes.append(f"split: {split_path} (the file's; edit it and rerun to change it)")
    else:
        split = draw_split(folder, float(data.validation_fraction), int(data.seed))
        directory.mkdir(parents=True, exist_ok=True)
        split_path.write_text(json.dumps(split, indent=1) + "\n")
        notes.append(f"split: {split_path} (drawn by case: validation_fraction {data.validation_fraction}, seed "
                     f"{data.seed}; edit it and rerun to change it)")
    data.split_cases = split
    data.cases = [c.case_id for c in folder.cases]  # a case added to or removed from the folder rebuilds
    builder = make_builder(data)
    if builder.is_prepared() and not data.overwrite:
        diff = settings_diff(builder, data)
        if diff and all(d.startswith(("split_cases.", "cases:")) for d in diff):
            notes.append(f"the split file or the folder's cases changed since the last prepare: the volumes are "
                         f"rebuilt ({'; '.join(diff)})")
            data.overwrite = True
    orphans = [c for c in unlabelled_cases(folder, split) if folder.case(c).label is not None]
    if orphans:
        notes.append(f"{len(orphans)} labelled case(s) are in no split, so pre-training only: "
                     f"{', '.join(orphans[:8])}{' ...' if len(orphans) > 8 else ''}; list them in {split_path}")
    if folder.num_training is not None and folder.num_training != sum(c.part == "Tr" for c in folder.cases):
        log.warning("%s: numTraining is %d but imagesTr holds %d cases", folder.root / "dataset.json",
                    folder.num_training, sum(c.part == "Tr" for c in folder.cases))
    summary = prepare(data)
    unlabelled = unlabelled_cases(folder, split)
    record = dict(folder=str(folder.root), name=data.name, layout=folder.layout, labels=folder.labels,
                  channel_names={str(k): v for k, v in folder.channel_names.items()}, file_ending=folder.file_ending,
                  split_file=str(split_path), splits={**split, "unlabelled": unlabelled},
                  data={**data.to_dict(), "overwrite": False})
    path = write_record(directory, record)
    labels = ", ".join(f"{n}={v}" for n, v in folder.labels.items())
    summary.notes = [f"labels: {labels} (fine-tune one with --label=NAME, or every label without --label)",
                     f"modality: {data.modality} (channel {data.get('channel', 0)}: "
                     f"{folder.channel_names.get(int(data.get('channel', 0)))})", *notes,
                     f"settings recorded: {path} (read by pretrain, finetune, evaluate, predict and al given "
                     f"--dataset={data.manual_dir})"]
    return summary, record


def cube_data_block(record: dict[str, Any], cubes: dict[str, Any], seed: int = 0) -> ml_collections.ConfigDict:
    """The ``dataset_cubes`` block cutting ``cubes`` (a ``config.data.cubes`` dict) from a recorded folder's volumes;
    its name carries the cube shape and a checksum of the rule."""
    volumes = dict(record["data"])
    rule = json.loads(json.dumps(dict(cubes)))
    tag = "x".join(str(int(c)) for c in rule["cube_shape"])
    checksum = zlib.crc32(json.dumps(rule, sort_keys=True).encode()) & 0xFFFF
    return ml_collections.ConfigDict(dict(
        builder="dataset_cubes", name=f"{volumes['name']}-{tag}-{checksum:04x}", storage="tfds", split="train",
        data_dir=volumes.get("data_dir", ""), manual_dir="", on_error=volumes.get("on_error", "skip"),
        overwrite=False, memory_buffer_mb=volumes.get("memory_buffer_mb", 64), seed=int(seed), cubes=rule,
        modality=volumes["modality"], hu_min=volumes.get("hu_min", -1000.0), hu_max=volumes.get("hu_max", 1000.0),
        mr_method=volumes.get("mr_method", "minmax"), validation_fraction=volumes.get("validation_fraction", 0.2),
        volumes=volumes))


