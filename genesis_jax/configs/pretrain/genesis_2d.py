"""Models Genesis 2D: the same restoration pre-training on axial slices (64x64) of the CT cubes, deformed in 2D.

Run:
  genesis-jax pretrain --config=pretrain/genesis_2d --workdir=runs/genesis_2d   # LUNA16 cubes prepared
  genesis-jax pretrain --config=pretrain/genesis_2d:tiny --workdir=/tmp/genesis_2d_tiny    # CPU smoke run
Expected: as the 3D recipe, with a 2D Genesis U-Net (base width 32, 4 levels) on (64, 64, 1) slices; the tiny run
takes well under a minute on a 2-core CPU and ends with a preview PNG of slices.

How the pairs are made: each step takes one random axial slice per sample of the clean cubes and deforms the
slices on the device with the published transforms acting in 2D, as the published 2D variant does: flips of the
two in-plane axes, local pixel shuffling in 2D windows, the Bezier intensity map, and in-/out-painting with 2D boxes
(per-axis size laws, margins and counts of the 3D transforms on the slice's two axes; genesis_jax.transforms with
``spatial_dims=2``). So every out-painted slice keeps 1 to 5 windows of its own anatomy (deforming the 3D cube
and then slicing left about 30% of out-painted slices pure noise). Batch: 16 slices per device (our choice; the
published 2D batch size is not documented). Everything else (optimizer, schedule, early stopping, checkpoints)
follows pretrain/genesis_chest_ct, which this file imports.
"""

import ml_collections

from genesis_jax.configs.common import parse_arg
from genesis_jax.configs.pretrain import genesis_chest_ct


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, **genesis_chest_ct.OPTIONS)
    c = genesis_chest_ct.recipe(tiny=opts.tiny, variant=opts.variant, schedule=opts.schedule, bf16=opts.bf16)
    c.model.ndim = 2
    c.slice_2d = True
    c.input_shape = (*c.input_shape[:2], 1)
    c.per_device_batch_size = 16
    if opts.tiny:
        c.global_batch_size = 16
    return c
