"""ECC: pulmonary embolism false-positive reduction (a published Models Genesis target task), classification with the
Genesis encoder + global average pooling + Dense 1024 + Dense 1.

Published recipe: 64x64x64 candidate crops, HU [-1000, 1000] -> [0, 1], Adam lr 1e-3, batch 24, early stopping
patience 38, binary cross-entropy, candidate-level ROC AUC. The published data (121 CTPA scans, 687 true / 5,568 false
candidates) are private: this config reads candidates in the LUNA16-candidates dataset layout from `data.data_dir`.
Published result (AUC %): Genesis Chest CT 87.20 +- 2.87, scratch uniform init 80.36 +- 3.58.

Run:
  genesis-jax finetune --config=finetune/ecc --workdir=runs/ecc --init=<Genesis weights dir> \
      --config.data.data_dir=<your prepared candidates>
CPU check (nodule vs non-nodule crops of the synthetic phantom stand in for emboli):
  genesis-jax finetune --config=finetune/ecc:tiny --workdir=/tmp/ecc_tiny --init=scratch
Expected: a summary line with the test AUC and accuracy.
"""

import ml_collections

from genesis_jax.configs.common import parse_arg
from genesis_jax.configs.finetune.common import downstream_data, finetune_config, synthetic_data, tiny


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, tiny=False)
    config = finetune_config(
        task="classification",
        model=dict(name="genesis_classifier", variant="keras", ndim=3, base_width=32, depth=4, in_channels=1,
                   num_classes=1, hidden=1024, activation="sigmoid", dtype="float32"),
        input_shape=(64, 64, 64, 1),
        loss="bce",
        learning_rate=1e-3,
        batch_size=24,
        patience=38,
        steps_per_epoch=160,
        data=downstream_data("luna16_candidates", name="ecc", crop_shape=(64, 64, 64)),
        sampling_mode="given",
    )
    if opts.tiny:
        config = tiny(config, input_shape=(16, 16, 16, 1))
        config.data = synthetic_data("nodule")
        config.sampling.splits.test = "validation"
        config.sampling.mode = "candidates"
    return config
