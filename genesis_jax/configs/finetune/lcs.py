"""LCS: liver segmentation on LiTS 2017 (a published Models Genesis target task), Genesis U-Net 3D.

Published recipe (Models Genesis, keras/downstream_tasks/config.py): 64x64x32 sub-volumes, HU [-1000, 1000] -> [0, 1],
Adam lr 1e-2, batch 16, early stopping after 20 epochs without a lower validation loss, Dice loss, IoU reported;
LiTS' 130 scans split 100/15/15 by index, liver positive (lesion labels are not part of the target).
Published result (IoU %, mean of 10 runs): Genesis Chest CT 85.10 +- 2.15, scratch He init 79.76 +- 5.43.

Run (LiTS prepared by `genesis-jax data prepare` from a manual download):
  genesis-jax finetune --config=finetune/lcs --workdir=runs/lcs --init=<Genesis weights dir>
  genesis-jax finetune --config=finetune/lcs --workdir=runs/lcs_scratch --init=scratch
  genesis-jax evaluate --config=finetune/lcs --weights=runs/lcs --out=runs/lcs/eval
CPU check (synthetic phantom liver, width-2 network, 2 epochs of 2 steps; metrics are meaningless at this size):
  genesis-jax finetune --config=finetune/lcs:tiny --workdir=/tmp/lcs_tiny --init=scratch
Expected: a summary line with test Dice/IoU/mean IoU; workdir holds weights/best, summary.json, predictions/*.png.
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
        learning_rate=1e-2,
        batch_size=16,
        patience=20,
        steps_per_epoch=100,
        data=downstream_data("lits"),
        sampling_mode="patches",
    )
    if opts.tiny:
        config = tiny(config)
        config.data = synthetic_data("liver")
        config.sampling.splits.test = "validation"
    return config
