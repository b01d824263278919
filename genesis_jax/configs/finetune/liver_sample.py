"""Liver segmentation on the real TotalSegmentator sample CTs: train on one patient, test on another (the liver demo).

Data (downloaded once from PyPI by genesis_jax.data.samples, ~38 MB): train and validation patches from `ct_abdomen`
(abdomen/pelvis CT, 3 mm), test on the whole `ct_dicom` series (another patient, Siemens, 0.98 x 0.98 x 2 mm), both
resampled to 3 mm. The labels are TotalSegmentator's own model outputs, not manual annotations, and there is one
training scan: this is a real but small demonstration, not a benchmark. Validation patches come from the training
scan (there is no third labelled liver scan), so the run uses a fixed step budget and evaluates the final weights
(select_best=False, no early stopping) instead of selecting on validation.

Network: the paper's Genesis U-Net (keras variant) at base width 4, depth 3, on 32x32x16 patches (CPU scale).
Optimiser: Adam 1e-3, batch 4, plateau halving as published.

Run:
  genesis-jax finetune --config=finetune/liver_sample --workdir=/tmp/liver --init=scratch
  genesis-jax finetune --config=finetune/liver_sample --workdir=/tmp/liver_g --init=<Genesis weights>
  python experiments/liver_demo.py      # the 2D version of this task: Genesis-2D vs scratch on slices, 20 pairs
  :tiny  the same data with 8 steps of a width-2 network (a CPU smoke run of the real-data path)
Expected: a summary line with the test Dice/IoU on ct_dicom; predictions/ct_dicom_overlay.png shows the outlines.
"""

import ml_collections

from genesis_jax.configs.common import parse_arg
from genesis_jax.configs.finetune.common import downstream_data, finetune_config, tiny


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, tiny=False)
    config = finetune_config(
        task="segmentation",
        model=dict(name="genesis_unet", variant="keras", ndim=3, base_width=4, depth=3, in_channels=1, num_classes=1,
                   head_activation="sigmoid", dtype="float32"),
        input_shape=(32, 32, 16, 1),
        loss="dice",
        learning_rate=1e-3,
        batch_size=4,
        patience=0,  # no early stopping: a fixed budget (see above)
        steps_per_epoch=25,
        data=downstream_data("liver_samples", target_spacing=(3.0, 3.0, 3.0),
                             samples=dict(train=("ct_abdomen",), validation=("ct_abdomen",), test=("ct_dicom",))),
        sampling_mode="patches",
    )
    config.prng_impl = "rbg"
    config.max_steps = 200
    config.select_best = False
    config.sampling.foreground_fraction = 0.5
    config.sampling.patches_per_volume = 8
    config.sampling.validation_patches = 16
    config.eval.batch_size = 8
    if opts.tiny:
        config = tiny(config, input_shape=(32, 32, 16, 1), base_width=2, depth=3)
        config.max_steps = 8
        config.steps_per_epoch = 4
    return config
