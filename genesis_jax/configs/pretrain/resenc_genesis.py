"""nnU-Net's ResEnc-L pre-trained with the Models Genesis restoration task, for fine-tuning in nnU-Net (docs/nnunet.md).

Two scales (the network is nnssl's ResEnc-L: 6 stages, 32..320 features, 1-3-4-6-6-6 residual blocks, 102,348,965
parameters with one output; see models/resenc):
  :genesis  (default) 64x64x32 cubes of the prepared LUNA16 data (data/luna16), per-device batch 6 as Models Genesis.
  :nnssl    160^3 patches, as nnssl's ModelGenesisTrainer, per-device batch 2 (its total batch). The cubes are cut
            from the CTs as they are (no resampling to 1 mm isotropic as nnssl does) by `data prepare` with this
            config's cube settings; scans shorter than 160 slices give none.
Optimiser (both): nnssl's (and nnU-Net's) SGD, lr 1e-2, momentum 0.99, Nesterov, weight decay 3e-5, instead of the
Genesis U-Net's SGD 1.0; the learning rate follows the Genesis plateau halving (nnssl uses a polynomial decay).
The output is the sigmoid restoration (MSE on it, as the Genesis recipe); the head is replaced when fine-tuning.

Run:
  genesis-jax summary --config=pretrain/resenc_genesis:nnssl        # per-layer table + memory estimate per device
  genesis-jax pretrain --config=pretrain/resenc_genesis --workdir=runs/resenc_genesis
  genesis-jax convert --from=runs/resenc_genesis/weights --to=resenc_genesis.pth --format=nnunet --patch-size=64,64,32
  genesis-jax pretrain --config=pretrain/resenc_genesis:tiny --workdir=/tmp/resenc_tiny   # CPU smoke run
Expected: the validation MSE falls; weights/ is written at the end (usable as --init, and convertible for nnU-Net).
:tiny uses the 16x16x8 synthetic cubes of pretrain/genesis_chest_ct:tiny and models/resenc:tiny (widths 4, 8, 16) and
finishes in a few minutes on a 2-core CPU.
"""

import ml_collections

from genesis_jax.configs.common import parse_arg
from genesis_jax.configs.models import resenc
from genesis_jax.configs.pretrain import genesis_chest_ct


# The variant options of the ResEnc pre-training configs (resenc_mim.py takes the same ones); e.g. ":nnssl,bf16".
OPTIONS = dict(scale=("genesis", "nnssl"), tiny=False, bf16=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return recipe(parse_arg(arg, **OPTIONS))


def recipe(opts: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The Genesis recipe with nnssl's ResEnc-L, optimiser and (``scale='nnssl'``) patches and batch."""
    c = genesis_chest_ct.recipe(tiny=opts.tiny, bf16=opts.bf16)
    model = resenc.get_config("tiny" if opts.tiny else "nnssl")
    c.model = model.model
    c.model.head_activation = "sigmoid"
    c.model.dtype = "bfloat16" if opts.bf16 else "float32"
    c.optimizer.update(dict(learning_rate=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5))
    c.precise_bn.num_batches = 0  # instance norm: no running statistics
    if opts.scale == "nnssl" and not opts.tiny:
        c.input_shape = model.input_shape  # (160, 160, 160, 1)
        c.per_device_batch_size = 2
        c.data.name = "resenc_160"  # other cubes than the published 64x64x32 ones, so another prepared dataset
        c.data.cubes.cube_shape = tuple(model.input_shape[:3])
        c.data.cubes.margins = (16, 16, 8)
        c.data.cubes.cubes_per_scan = 4
    return c
