"""NCS: lung nodule segmentation on LIDC-IDRI crops (a published Models Genesis target task), Genesis U-Net 3D.

Published recipe (keras/downstream_tasks, the NCS notebook): 64x64x32 crops around each nodule, [0, 1] intensities,
Adam lr 1e-3, batch 16, early stopping patience 50, Dice loss; the whole pre-trained model including its sigmoid head
is fine-tuned (keep_head=True here, as the notebook does). Reported metric: the Keras mean IoU (mean of background and
foreground IoU over thresholds 0.5:0.05:0.95), reported as `set.mean_iou`. Published result: Genesis Chest CT
77.62 +- 0.64, scratch He init 76.44 +- 0.45.

Run (LIDC crops prepared by `genesis-jax data prepare` from a manual download):
  genesis-jax finetune --config=finetune/ncs --workdir=runs/ncs --init=<Genesis weights dir>
CPU check (crops around the synthetic phantom's nodules):
  genesis-jax finetune --config=finetune/ncs:tiny --workdir=/tmp/ncs_tiny --init=scratch
Expected: a summary line with the test mean IoU, IoU and Dice of the crops.
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
        patience=50,
        steps_per_epoch=256,  # ~4,082 training crops / 16
        data=downstream_data("lidc"),
        sampling_mode="given",
    )
    config.init.keep_head = True
    if opts.tiny:
        config = tiny(config)
        config.data = synthetic_data("nodule")
        config.sampling.splits.test = "validation"
        config.sampling.mode = "crops"
    return config
