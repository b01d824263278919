"""BMS: brain tumour segmentation on BraTS 2018 FLAIR (a published Models Genesis target task), Genesis U-Net 3D.

Published recipe: 64x64x32 sub-volumes, MRI normalised per patient (min-max), Adam lr 1e-3, batch 16, early stopping
patience 30, Dice loss, IoU reported; BraTS' 3-fold CSVs: folds 1+2 train (1/8 of them validation), fold 3 test;
every tumour label positive. Published result (IoU %): Genesis Chest CT 67.96 +- 1.29, scratch He init 63.00 +- 1.73.

Run (BraTS 2018 prepared by `genesis-jax data prepare` from a manual download):
  genesis-jax finetune --config=finetune/bms --workdir=runs/bms --init=<Genesis weights dir>
CPU check (the synthetic CT phantom stands in for the MR data: it only exercises the pipeline):
  genesis-jax finetune --config=finetune/bms:tiny --workdir=/tmp/bms_tiny --init=scratch
Expected: a summary line with test Dice/IoU/mean IoU; workdir holds weights/best and summary.json.
"""

import ml_collections

from genesis_jax.configs.common import parse_arg
from genesis_jax.configs.finetune.common import downstream_data, finetune_config, synthetic_data, tiny


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, tiny=False)
    config = finetune_config(
        task="segmentation",
        model=dict(name="genesis_unet", variant="keras", ndim=3, base_width=32, depth=4, in_channels=1, num_classes=1,
                   head_activation="sigmoid", dtype="float32"),
        input_shape=(64, 64, 32, 1),
        loss="dice",
        learning_rate=1e-3,
        batch_size=16,
        patience=30,
        steps_per_epoch=100,
        data=downstream_data("brats"),
        sampling_mode="patches",
    )
    if opts.tiny:
        config = tiny(config)
        config.data = synthetic_data("liver")
        config.sampling.splits.test = "validation"
    return config
