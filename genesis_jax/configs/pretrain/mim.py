"""Masked image modelling pre-training (SparK / MAE-style for convolutional networks): reconstruct the masked blocks.

Run (GPU/TPU), on the prepared LUNA16 cubes as the Genesis recipe (data/luna16):
  genesis-jax pretrain --config=pretrain/mim --workdir=runs/mim
  ... :keras          the paper's Genesis U-Net variant;   :unetpp   UNet++ (deep supervision, heads summed)
  ... :2d             a 2D network on one axial slice per cube
CPU smoke run:
  genesis-jax pretrain --config=pretrain/mim:tiny --workdir=/tmp/mim_tiny
Expected (tiny): a minute or so on a 2-core CPU: 40 steps in 4 epochs on 16x16x8 cubes of 6 synthetic CT phantoms
with a base-width-2, depth-2 U-Net; each epoch prints the masked-region validation MSE beside the gate's figures
(one run printed val_restoration_mse 0.02694 after epoch 1 and 0.01611 after epoch 4, against 0.01657 for the
batch-mean predictor: ratio 0.97, so ``pretext_gate.passed`` is false at this size); summary.json and
weights/metadata.json hold the gate, previews/ a PNG whose last column is the mask.
With a learned mask token (``--config.pretext.mask_fill=token``) one run printed val_restoration_mse 0.02517 after
epoch 1 and 0.01687 after epoch 4 (batch mean 0.01657); summary.json adds ``pretext_params_fingerprint``.
Its weights/ initialise the fine-tuning :tiny configs (same width and depth):
  genesis-jax finetune --config=finetune/lcs:tiny --workdir=/tmp/lcs_mim --init=/tmp/mim_tiny/weights

Recipe: per sample 60% of a grid of 8-voxel blocks (4 for :tiny) masked on the device (genesis_jax.pretext.mim;
SparK masks 60% of its patches), the masked voxels set to 0 (``--config.pretext.mask_fill=token``: a learned mask
token, one value per input channel starting at ``fill_value``, trained with the network and checkpointed with it,
not exported with the weights), the loss the MSE on the masked voxels only
(``--config.pretext.normalize_patches=True --config.model.head_activation=None`` for MAE's per-block standardised
targets). Everything else is the Genesis recipe's budget (pretrain/genesis_chest_ct: data, batch 6 per device, SGD
1.0 with plateau halving, early stopping patience 50, up to 10,000 epochs), so the pretexts compare at equal cost.
Quality gate: the masked-region MSE must be <= 0.7 x the batch-mean predictor's on the same voxels.
"""

import ml_collections

from genesis_jax.configs.common import parse_arg
from genesis_jax.configs.pretrain import genesis_2d, genesis_chest_ct, unetpp

# The variant options of the masking configs (genesis_mim.py takes the same ones); e.g. ":tiny", ":unetpp,2d,tiny".
OPTIONS = dict(tiny=False, variant=("pytorch", "keras", "unetpp"), dims=("3d", "2d"), schedule=("plateau", "step"),
               bf16=False)


def base(opts: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The network and budget the options pick: a Genesis U-Net recipe (pytorch or keras) or UNet++, 3D or 2D."""
    two_d = opts.dims == "2d"
    if opts.variant == "unetpp":
        return unetpp.recipe(tiny=opts.tiny, two_d=two_d, schedule=opts.schedule, bf16=opts.bf16)
    c = genesis_chest_ct.recipe(tiny=opts.tiny, variant=opts.variant, schedule=opts.schedule, bf16=opts.bf16)
    return genesis_2d.on_slices(c, tiny=opts.tiny) if two_d else c


def masking(tiny: bool, **fields) -> ml_collections.ConfigDict:
    """The masking block of ``config.pretext`` (the other fields given)."""
    return ml_collections.ConfigDict(dict(mask_ratio=0.6, block_size=4 if tiny else 8, fill_value=0.0,
                                          mask_fill="constant", **fields))


def as_mim(c: ml_collections.ConfigDict, tiny: bool) -> ml_collections.ConfigDict:
    """A pre-training recipe ``c`` turned into masked image modelling: no deformations, the masking pretext and its
    gate (pretrain/resenc_mim applies it to the ResEnc recipe)."""
    del c.transforms  # no deformations: the masks are the whole pretext
    c.pretext = masking(tiny, name="mim", normalize_patches=False, gate=ml_collections.ConfigDict(dict(
        max_ratio=0.7, max_clean_mse=ml_collections.FieldReference(None, field_type=float))))
    return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, **OPTIONS)
    return as_mim(base(opts), opts.tiny)
