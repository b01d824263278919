"""``--dataset=DIR`` (and ``--label=NAME``) applied to a loaded config: the settings ``genesis-jax data prepare
--dataset=DIR`` recorded replace ``config.data``, so no data override is ever repeated.

* pre-training (``pretrain_with_dataset``): ``config.data`` becomes the ``dataset_cubes`` block that cuts the
  config's cube rule (``config.data.cubes``) from the folder's prepared volumes;
* fine-tuning, evaluation (``finetune_with_dataset``): ``config.data`` becomes the recorded volume block with the
  chosen labels; one label gives a binary network (one sigmoid output, the config's loss), several or none (every
  label) a softmax network with background (``config.softmax_loss``, default ``dice_ce``); ``config.labels``
  records {name: class id} (what the exported weights' metadata and the predicted label maps use). The test set is
  the labelled imagesTs/ cases, or the validation cases when there are none.
"""

from __future__ import annotations

import ml_collections

from genesis_jax.config_loader import ConfigError
from genesis_jax.data.folder_prepare import cube_data_block
from genesis_jax.data.folders import label_table, load_record

DATASET_BUILDERS = ("dataset_volumes", "dataset_cubes")


def _needs_dataset(config: ml_collections.ConfigDict, label: str | None) -> None:
    """Without --dataset: a dataset-folder config cannot run, and --label means nothing."""
    if label:
        raise ConfigError("--label needs --dataset=DIR (the labels are a dataset folder's)")
    data = config.get("data") or {}
    if data.get("builder") in DATASET_BUILDERS and not data.get("manual_dir") and not data.get("volumes"):
        raise ConfigError("this config reads a dataset folder: add --dataset=DIR (prepared once by "
                          "`genesis-jax data prepare --dataset=DIR`)")


def pretrain_with_dataset(config: ml_collections.ConfigDict, dataset: str | None) -> ml_collections.ConfigDict:
    """``config`` reading cubes of its ``config.data.cubes`` rule from the prepared folder ``dataset``."""
    if dataset is None:
        _needs_dataset(config, None)
        return config
    record = load_record(dataset, config.data.get("data_dir", ""))
    if "cubes" not in config.data:
        raise ConfigError("config.data has no cubes block to cut from the dataset; use --config=pretrain/dataset")
    with config.unlocked():
        config.data = cube_data_block(record, config.data.cubes.to_dict(), int(config.data.get("seed", 0)))
    return config


def finetune_with_dataset(config: ml_collections.ConfigDict, dataset: str | None,
                          label: str | None) -> ml_collections.ConfigDict:
    """``config`` reading the prepared folder ``dataset`` with the classes ``label`` names ('' = every label)."""
    if dataset is None:
        _needs_dataset(config, label)
        return config
    record = load_record(dataset, config.data.get("data_dir", ""))
    data = ml_collections.ConfigDict(record["data"])
    data.label = label or ""
    _, classes = label_table(dict(record["labels"]), data.label)
    binary = len(classes) == 2
    with config.unlocked():
        config.data = data
        config.labels = ml_collections.ConfigDict(classes)
        config.model.num_classes = 1 if binary else len(classes)
        config.model.head_activation = "sigmoid" if binary else "softmax"
        if not binary:
            config.loss = config.get("softmax_loss") or "dice_ce"
        if "sampling" in config and not record["splits"].get("test"):
            config.sampling.splits.test = "validation"
    return config


def labelled_volumes(dataset: str, label: str, splits=("train", "validation"), data_dir: str = ""):
    """[(scan id, image in [0, 1], binary label of ``label``)] of a prepared folder's labelled cases in ``splits``
    (e.g. an active-learning pool's volumes)."""
    from genesis_jax.data.normalize import dequantize_unit
    from genesis_jax.data.sources import volume_source

    record = load_record(dataset, data_dir)
    data = ml_collections.ConfigDict(record["data"])
    data.label = label
    if len(label_table(dict(record["labels"]), label)[1]) != 2:
        raise ConfigError(f"--label={label!r}: an active-learning pool needs one label (positive vs the rest); it has "
                          f"{', '.join(n for n in record['labels'] if record['labels'][n] != 0)}")
    out = []
    for split in splits:
        if not record["splits"].get(split):
            continue
        source = volume_source(data, split)
        for i in range(len(source)):
            element = source[i]
            sid = element["scan_id"]
            out.append((sid.decode() if isinstance(sid, bytes) else str(sid), dequantize_unit(element["image"]),
                        element["label"]))
    return out


def label_from_weights(metadata: dict) -> str:
    """The ``--label`` selection a fine-tuned network was trained with, from its weights' metadata ('' = unknown)."""
    labels = {str(n): int(k) for n, k in dict(metadata.get("labels") or {}).items()}
    names = sorted((n for n, k in labels.items() if k != 0), key=labels.get)  # metadata.json sorts its keys
    return ",".join(names) if names and names != ["foreground"] else ""
