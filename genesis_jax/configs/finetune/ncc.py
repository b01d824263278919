"""NCC: lung nodule false-positive reduction on LUNA16 candidates (a published Models Genesis target task),
classification with the Genesis encoder + global average pooling + Dense 1024 + Dense 1.

Published recipe: 64x64x32 candidate crops, HU [-1000, 1000] -> [0, 1], Adam lr 1e-3, batch 24, early stopping
patience 10, binary cross-entropy, candidate-level ROC AUC; LUNA16 subsets 0-4 train, 5-6 validation, 7-9 test.
Published result (AUC %): Genesis Chest CT 98.34 +- 0.44, scratch He init 96.03 +- 1.82.

Run (LUNA16 candidates prepared by `genesis-jax data prepare` from a manual download):
  genesis-jax finetune --config=finetune/ncc --workdir=runs/ncc --init=<Genesis weights dir>
  (linear probe: --config.init.freeze_encoder=True; slower encoder: --config.init.transferred_lr_scale=0.1)
CPU check (nodule vs non-nodule crops of the synthetic phantom):
  genesis-jax finetune --config=finetune/ncc:tiny --workdir=/tmp/ncc_tiny --init=scratch
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
        input_shape=(64, 64, 32, 1),
        loss="bce",
        learning_rate=1e-3,
        batch_size=24,
        patience=10,
        steps_per_epoch=500,
        data=downstream_data("luna16_candidates"),
        sampling_mode="given",
    )
    if opts.tiny:
        config = tiny(config)
        config.data = synthetic_data("nodule")
        config.sampling.splits.test = "validation"
        config.sampling.mode = "candidates"
    return config
