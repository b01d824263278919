"""LUNA16 pre-training cubes exactly as published: 64x64x32, margins 100/100/30, tissue test 0.425/0.15, 32 per scan.

Run (needs LUNA16 downloaded by hand: subset0/ ... subset9/ with *.mhd + *.raw in one directory):
  genesis-jax data prepare --config=data/luna16 --config.data.manual_dir=/data/luna16
Expected: subsets 0-4 -> train (445 scans, up to 14,240 cubes), 5-6 -> validation (178 scans, up to 5,696 cubes),
7-9 -> test; stored as uint16 (256 KiB a cube instead of the published 1 MiB float64); scans that cannot be read or
are too small are listed as skipped. Read it with storage='tfds':
  cube_source(load_config('data/luna16', ['--config.data.storage=tfds']).data)
"""

import ml_collections

from genesis_jax.configs.common import parse_arg
from genesis_jax.configs.data import genesis_cubes


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parse_arg(arg)  # no options: the published extraction only
    config = genesis_cubes.get_config("directory")
    config.data.builder = "luna16_cubes"
    config.data.name = "published"
    config.data.subsets = dict(train=(0, 1, 2, 3, 4), validation=(5, 6), test=(7, 8, 9))
    return config
