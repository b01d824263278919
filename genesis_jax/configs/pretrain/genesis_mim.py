"""Genesis + masking pre-training: the Models Genesis deformations, then block masks on the deformed input; restore
the undeformed original.

Run (GPU/TPU), on the prepared LUNA16 cubes as the Genesis recipe (data/luna16):
  genesis-jax pretrain --config=pretrain/genesis_mim --workdir=runs/genesis_mim
  ... :keras, :unetpp, :2d as pretrain/mim
CPU smoke run:
  genesis-jax pretrain --config=pretrain/genesis_mim:tiny --workdir=/tmp/genesis_mim_tiny
Expected (tiny): as pretrain/mim:tiny (40 steps, 4 epochs), slower per step (the deformations run too); one run
printed val_restoration_mse 0.0367 after epoch 1 and 0.01794 after epoch 4 against 0.01703 for the batch-mean
predictor (ratio 1.05) and a clean identity MSE of 0.01974: ``pretext_gate.passed`` is false at this size, as for
Genesis alone; the preview shows deformed + masked input | restored | original | mask and a clean-input row.
Its weights/ initialise the fine-tuning :tiny configs:
  genesis-jax finetune --config=finetune/lcs:tiny --workdir=/tmp/lcs_gm --init=/tmp/genesis_mim_tiny/weights

Recipe: the Genesis recipe (pretrain/genesis_chest_ct: published deformation rates, SGD 1.0, plateau halving, early
stopping patience 50) with pretrain/mim's masks (60% of 8-voxel blocks, 4 for :tiny) applied AFTER the deformations
(genesis_jax.pretext.genesis_mim; the masked voxels 0, or a learned mask token with
``--config.pretext.mask_fill=token`` as in pretrain/mim); the MSE scores every voxel
(``--config.pretext.loss_on=masked``: the masked ones only). Quality gate: Genesis's (restoration MSE <= 0.7 x the
batch-mean predictor's; clean identity MSE <= 0.005).
"""

import ml_collections

from genesis_jax.configs.common import parse_arg
from genesis_jax.configs.pretrain import mim


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, **mim.OPTIONS)
    c = mim.base(opts)
    c.pretext = mim.masking(opts.tiny, name="genesis_mim", loss_on="all", gate=ml_collections.ConfigDict(dict(
        max_ratio=0.7, max_clean_mse=0.005)))
    return c
