"""UNet++ restoration pre-training: the Models Genesis task for UNet++ (3D by default, ``:2d`` on axial slices,
deformed in 2D as pretrain/genesis_2d describes).

Run:
  genesis-jax pretrain --config=pretrain/unetpp --workdir=runs/unetpp_genesis    # LUNA16 cubes prepared
  genesis-jax pretrain --config=pretrain/unetpp:tiny --workdir=/tmp/unetpp_tiny       # CPU smoke run
  genesis-jax pretrain --config=pretrain/unetpp:2d,tiny --workdir=/tmp/unetpp_2d_tiny
Expected: as the Genesis recipe (SGD 1.0, plateau halving, early stopping, checkpoints, previews) with UNet++
(widths 32..512, deep supervision): the MSE is taken on every head's sigmoid output and the heads' losses are
summed (the one deep-supervision reduction, genesis_jax.train.losses), with the learning rate divided by the number
of heads so that a step is the Genesis recipe's step on their mean; previews show the averaged prediction. The
tiny runs end in about a minute on a 2-core CPU.
UNet++ pools four times, so cube sides must divide by 16 (64x64x32 does). Dropout 0.5 stays on in training as in
the published UNet++; --config.model.dropout=0 turns it off.
"""

import ml_collections

from genesis_jax.configs.common import parse_arg
from genesis_jax.configs.pretrain import genesis_chest_ct


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, tiny=False, dims=("3d", "2d"), schedule=("plateau", "step"), bf16=False)
    two_d = opts.dims == "2d"
    c = genesis_chest_ct.recipe(tiny=opts.tiny, schedule=opts.schedule, bf16=opts.bf16)
    c.model = ml_collections.ConfigDict(dict(
        name="unetpp", ndim=2 if two_d else 3, base_width=c.model.base_width, depth=c.model.depth, in_channels=1,
        num_classes=1, deep_supervision=True, mode="accurate", dropout=0.5, head_activation="sigmoid",
        dtype=c.model.dtype,
    ))
    c.apply_kwargs = ml_collections.ConfigDict(dict(return_all_heads=True))
    if opts.tiny:
        c.model.depth = 2
    c.optimizer.learning_rate = c.optimizer.learning_rate / c.model.depth  # one head per level of the top row
    if two_d:
        c.slice_2d = True
        c.input_shape = (*c.input_shape[:2], 1)
    return c
