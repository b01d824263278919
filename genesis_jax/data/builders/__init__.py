"""TFDS builders (ArrayRecord, no TensorFlow) by name, built from a ``config.data`` block, and prepared-data access.

  genesis_cubes, luna16_cubes                                  pre-training cubes (cube_builders.py)
  lits_liver, brats18_flair, lidc_nodule_crops, luna16_candidates  target tasks (downstream.py)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

from genesis_jax.data.builders.base import DatasetError, GenesisBuilder, GenesisDataConfig, PrepareReport, \
    data_params
from genesis_jax.data.builders.cube_builders import GenesisCubes, Luna16Cubes
from genesis_jax.data.builders.downstream import Brats18Flair, LidcNoduleCrops, LitsLiver, Luna16Candidates

BUILDERS: dict[str, type[GenesisBuilder]] = {
    cls.name: cls for cls in (GenesisCubes, Luna16Cubes, LitsLiver, Brats18Flair, LidcNoduleCrops, Luna16Candidates)
}
# TFDS warns on every builder made from a config object (ours always are); say nothing instead.
logging.getLogger("absl").addFilter(lambda record: "Using custom data configuration" not in record.getMessage())
# Paths differ between machines without changing the data: not compared when a prepared dataset is opened.
_PATH_PARAMS = ("manual_dir",)

__all__ = ["BUILDERS", "DatasetError", "PrepareReport", "make_builder", "open_split", "resolve_data_dir",
           "settings_diff"]


def resolve_data_dir(data_dir: str) -> Path:
    """``data_dir``, or <cache>/tensorflow_datasets when empty."""
    from genesis_jax.data.samples import cache_root

    return Path(data_dir).expanduser() if data_dir else cache_root() / "tensorflow_datasets"


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


def make_builder(data_config, *, split_inputs: dict[str, Sequence[tuple[str, str]]] | None = None
                 ) -> GenesisBuilder:
    """The builder named by ``data_config.builder``, configured by the whole ``data_config`` block.

    ``split_inputs`` ({split: [(scan_id, path), ...]}) fixes the scans of each split (genesis_cubes only).
    """
    name = data_config.builder
    if name not in BUILDERS:
        raise DatasetError(f"config.data.builder={name!r} is not one of {sorted(BUILDERS)}")
    params = _jsonable(data_config.to_dict())
    if split_inputs is not None:
        params["split_inputs"] = {k: [[str(s), str(p)] for s, p in v] for k, v in split_inputs.items()}
    cls = BUILDERS[name]
    config = GenesisDataConfig(name=data_config.name, version=cls.VERSION, params=params,
                               description=f"genesis_jax {name}/{data_config.name}")
    return cls(config=config, data_dir=str(resolve_data_dir(data_config.get("data_dir", ""))),
               file_format="array_record")


def settings_diff(builder: GenesisBuilder, data_config) -> list[str]:
    """The data settings (seed, cubes, num_scans, modality, ...) in which the prepared dataset of ``builder``
    differs from ``data_config`` (recorded in its dataset info when it was written); [] when they agree."""
    recorded = dict(builder.info.metadata.get("params", {}))
    current = data_params(_jsonable(data_config.to_dict()))
    for key in _PATH_PARAMS:
        recorded.pop(key, None)
        current.pop(key, None)
    return sorted(k for k in set(recorded) | set(current) if recorded.get(k) != current.get(k))


def open_split(data_config, split: str):
    """Random-access ArrayRecord source of a prepared split; errors say how to prepare or what differs."""
    builder = make_builder(data_config)
    if not builder.is_prepared():
        raise DatasetError(f"dataset {data_config.builder}/{data_config.name} is not prepared in {builder.data_dir}; "
                           f"run `genesis-jax data prepare --config=<this config>` first")
    diff = settings_diff(builder, data_config)
    if diff:
        raise DatasetError(f"{builder.data_dir} was prepared with other settings ({', '.join(diff)}); prepare again "
                           f"with --config.data.overwrite=True or choose another --config.data.name")
    splits = list(builder.info.splits.keys())
    if split not in splits:
        raise DatasetError(f"{builder.data_dir} has no split {split!r}; it has {splits}")
    return builder.as_data_source(split)
