"""Genesis U-Net 3D, as published: `pytorch` (transposed-conv decoder) or `keras` (nearest up-sampling) variant.

Run:
  genesis-jax summary --config=models/unet3d:pytorch   # ends with "Total params: 19,073,665"
  genesis-jax summary --config=models/unet3d:keras     # ends with "Total params: 16,320,257"
  genesis-jax summary --config=models/unet3d:pytorch --cost   # + one pre-training step of batch 6 compiled with XLA:
      "FLOPs per sample: ... (0.682 TFLOP)" (a minute or two on a CPU; experiments/results/compute_plan.md)
Overrides: --config.model.base_width=8 --config.model.depth=3 --config.model.num_classes=2 ...
Expected: a per-layer table for a (1, 64, 64, 32, 1) input computed with jax.eval_shape in a few seconds.
"""

import ml_collections

from genesis_jax.configs.common import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, variant=("pytorch", "keras"))
    config = ml_collections.ConfigDict()
    config.model = ml_collections.ConfigDict(
        dict(
            name="genesis_unet",
            variant=opts.variant,
            ndim=3,
            base_width=32,
            depth=4,
            in_channels=1,
            num_classes=1,
            head_activation="sigmoid",
            dtype="float32",
        )
    )
    config.input_shape = (64, 64, 32, 1)
    return config
