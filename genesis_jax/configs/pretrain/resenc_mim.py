"""nnU-Net's ResEnc-L pre-trained by masked image modelling (reconstruct masked blocks), for fine-tuning in nnU-Net.

The network, data, optimiser, scales and options of pretrain/resenc_genesis (ResEnc-L as nnssl, 102,348,965
parameters with one output; nnssl's SGD 1e-2, momentum 0.99, Nesterov, weight decay 3e-5) with the masking pretext
of pretrain/mim instead of the Genesis deformations: masked voxels set to 0, MSE on the masked voxels only.
  :genesis  (default) 64x64x32 cubes of the prepared LUNA16 data (data/luna16), per-device batch 6; 60% of a grid of
            8-voxel blocks masked per sample (pretrain/mim's SparK-like setting).
  :nnssl    160^3 patches (the prepared dataset of pretrain/resenc_genesis:nnssl), per-device batch 2; 75% of 16-voxel
            blocks masked, as nnssl's BaseMAETrainer.
  :bf16     bfloat16 compute (float32 parameters).
The global batch is per-device batch x devices: the pretrain command shards each batch over the devices of the mesh
(data parallel; ``--config.num_devices`` or ``--config.global_batch_size`` fix it).

Run:
  genesis-jax summary --config=pretrain/resenc_mim:nnssl        # per-layer table + memory estimate per device
  genesis-jax pretrain --config=pretrain/resenc_mim --workdir=runs/resenc_mim
  genesis-jax convert --from=runs/resenc_mim/weights --to=resenc_mim.pth --format=nnunet --patch-size=64,64,32
  genesis-jax pretrain --config=pretrain/resenc_mim:tiny --workdir=/tmp/resenc_mim_tiny   # CPU smoke run
Expected: the masked-region validation MSE falls; each epoch prints it beside the gate's batch-mean predictor
(quality gate: <= 0.7 x that predictor's MSE on the same voxels); weights/ is written at the end (usable as --init,
and convertible for nnU-Net). :tiny uses the 16x16x8 synthetic cubes of pretrain/genesis_chest_ct:tiny, 4-voxel
blocks and models/resenc:tiny (widths 4, 8, 16); it finishes in a few minutes on a 2-core CPU.
"""

import ml_collections

from genesis_jax.configs.common import parse_arg
from genesis_jax.configs.pretrain import mim, resenc_genesis


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, **resenc_genesis.OPTIONS)
    c = mim.as_mim(resenc_genesis.recipe(opts), opts.tiny)
    if opts.scale == "nnssl" and not opts.tiny:
        c.pretext.update(dict(mask_ratio=0.75, block_size=16))  # nnssl's BaseMAETrainer
    return c
