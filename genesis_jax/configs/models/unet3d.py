"""Genesis U-Net 3D, as published: `pytorch` (transposed-conv decoder) or `keras` (nearest up-sampling) variant.

Run:
  genesis-jax summary --config=configs/models/unet3d.py:pytorch   # ends with "Total params: 19,073,665"
  genesis-jax summary --config=configs/models/unet3d.py:keras     # ends with "Total params: 16,320,257"
Overrides: --config.model.base_width=8 --config.model.depth=3 --config.model.num_classes=2 ...
Expected: a per-layer table for a (1, 64, 64, 32, 1) input computed with jax.eval_shape in a few seconds.
"""

import ml_collections


def get_config(variant: str = "pytorch") -> ml_collections.ConfigDict:
    if variant not in ("pytorch", "keras"):
        raise ValueError(f"unet3d.py: variant must be 'pytorch' or 'keras', got {variant!r}")
    config = ml_collections.ConfigDict()
    config.model = ml_collections.ConfigDict(
        dict(
            name="genesis_unet",
            variant=variant,
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
