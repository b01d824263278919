"""UNet++ (nested dense skips, deep supervision, pruning) in 2D or 3D, widths 32..512, depth 4.

Run:
  genesis-jax summary --config=models/unetpp:2d                                      # 9,041,700 (4 heads)
  genesis-jax summary --config=models/unetpp:2d --config.model.prune_level=1         # 100,961 (L1)
  genesis-jax summary --config=models/unetpp:3d --config.model.deep_supervision=False  # 26,198,273
Expected: a per-layer table ending with "Total params: N"; pruning builds only the nodes with i + j <= L.
"""

import ml_collections

from genesis_jax.configs.common import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, dims=("2d", "3d"))
    config = ml_collections.ConfigDict()
    config.model = ml_collections.ConfigDict(
        dict(
            name="unetpp",
            ndim=2 if opts.dims == "2d" else 3,
            base_width=32,
            depth=4,
            in_channels=1,
            num_classes=1,
            deep_supervision=True,
            mode="accurate",
            prune_level=ml_collections.FieldReference(None, field_type=int),
            dropout=0.5,
            norm=ml_collections.FieldReference(None, field_type=str),
            head_activation="sigmoid",
            dtype="float32",
        )
    )
    config.input_shape = (96, 96, 1) if opts.dims == "2d" else (64, 64, 32, 1)
    return config
