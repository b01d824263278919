"""TFDS builders (ArrayRecord, no TensorFlow) by name, built from a ``config.data`` block, and prepared-data access.

  genesis_cubes, luna16_cubes                                  pre-training cubes (cube_builders.py)
  lits_liver, brats18_flair, lidc_nodule_crops, luna16_candidates  target tasks (downstream.py)
  dataset_volumes, dataset_cubes                               a user's own dataset folder (folder_builders.py)
"""

from __future__ import annotations

import logging
from typing import Sequence

from genesis_jax.data.builders.base import DatasetError, GenesisBuilder, PrepareReport, builder_of, open_prepared, \
    resolve_data_dir, settings_diff
from genesis_jax.data.builders.cube_builders import GenesisCubes, Luna16Cubes
from genesis_jax.data.builders.downstream import Brats18Flair, LidcNoduleCrops, LitsLiver, Luna16Candidates
from genesis_jax.data.builders.folder_builders import DatasetCubes, DatasetVolumes

BUILDERS: dict[str, type[GenesisBuilder]] = {
    cls.name: cls for cls in (GenesisCubes, Luna16Cubes, LitsLiver, Brats18Flair, LidcNoduleCrops, Luna16Candidates,
                              DatasetVolumes, DatasetCubes)
}
# TFDS warns on every builder made from a config object (ours always are); say nothing instead.
logging.getLogger("absl").addFilter(lambda record: "Using custom data configuration" not in record.getMessage())

__all__ = ["BUILDERS", "DatasetError", "PrepareReport", "make_builder", "open_split", "prepared_splits",
           "resolve_data_dir", "settings_diff"]


def make_builder(data_config, *, split_inputs: dict[str, Sequence[tuple[str, str]]] | None = None
                 ) -> GenesisBuilder:
    """The builder named by ``data_config.builder``, configured by the whole ``data_config`` block.

    ``split_inputs`` ({split: [(scan_id, path), ...]}) fixes the scans of each split (genesis_cubes only).
    """
    name = data_config.builder
    if name not in BUILDERS:
        raise DatasetError(f"config.data.builder={name!r} is not one of {sorted(BUILDERS)}")
    return builder_of(BUILDERS[name], data_config, split_inputs=split_inputs)


def open_split(data_config, split: str):
    """Random-access ArrayRecord source of a prepared split; errors say how to prepare or what differs."""
    return open_prepared(make_builder(data_config), data_config, split)


def prepared_splits(data_config) -> list[str]:
    """The splits of the prepared dataset ``data_config`` names ([] when it is not prepared)."""
    builder = make_builder(data_config)
    return list(builder.info.splits.keys()) if builder.is_prepared() else []
