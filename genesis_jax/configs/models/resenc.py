"""nnU-Net's residual-encoder U-Net (ResEnc) and plain U-Net, with the ResEnc M/L/XL presets.

The presets are what nnU-Net's planners (``nnUNetPlannerResEnc{M,L,XL}``, nnunetv2 2.8.1) plan for isotropic 1 mm
images larger than the patch: the same 6-stage network (features 32, 64, 128, 256, 320, 320; strides 1, 2, 2, 2, 2,
2; 3^3 kernels; 1, 3, 4, 6, 6, 6 residual blocks; one conv per decoder level; conv bias; instance norm + leaky
ReLU) and the patch each VRAM target affords: M 128^3 (8 GB), L 192^3 (24 GB), XL 256x224x224 (40 GB). nnssl
pre-trains ResEnc-L at 160^3 (``:nnssl``). ``:L2d`` is the 2D plan (8 stages, up to 512 features, 512^2 patch);
``:plain`` nnU-Net's default ``PlainConvUNet`` (two convs per stage and decoder level).
Weights for nnU-Net: ``genesis-jax convert --from=<weights> --to=x.pth --format=nnunet`` (docs/nnunet.md).

Run:
  genesis-jax summary --config=models/resenc:L      # ends with "Total params: N", N = dynamic-network-architectures'
  genesis-jax summary --config=models/resenc:tiny   # 16x16x16 input, widths 4..16, for CPU tests
Overrides: --config.model.num_classes=3 --config.model.deep_supervision=True --config.model.in_channels=2 ...
Expected: a per-layer table computed with jax.eval_shape (nothing is allocated), the output shape equal to the input's
spatial shape with num_classes channels.
"""

import ml_collections

from genesis_jax.configs.common import parse_arg

# preset -> (ndim, patch size, features per stage, blocks per stage, decoder convs per level)
_RESENC_3D = ((32, 64, 128, 256, 320, 320), (1, 3, 4, 6, 6, 6), (1, 1, 1, 1, 1))
_PRESETS = {
    "M": (3, (128, 128, 128), *_RESENC_3D),
    "L": (3, (192, 192, 192), *_RESENC_3D),
    "XL": (3, (256, 224, 224), *_RESENC_3D),
    "nnssl": (3, (160, 160, 160), *_RESENC_3D),
    "L2d": (2, (512, 512), (32, 64, 128, 256, 512, 512, 512, 512), (1, 3, 4, 6, 6, 6, 6, 6), (1,) * 7),
    "plain": (3, (128, 128, 128), (32, 64, 128, 256, 320, 320), (2,) * 6, (2,) * 5),
    "tiny": (3, (16, 16, 16), (4, 8, 16), (1, 2, 2), (1, 1)),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, preset=tuple(_PRESETS))
    ndim, patch, features, blocks, decoder = _PRESETS[opts.preset]
    n = len(features)
    config = ml_collections.ConfigDict()
    config.model = ml_collections.ConfigDict(
        dict(
            name="plain_unet" if opts.preset == "plain" else "resenc_unet",
            ndim=ndim,
            in_channels=1,
            num_classes=1,
            features_per_stage=features,
            kernel_sizes=(3,) * n,
            strides=(1,) + (2,) * (n - 1),
            n_blocks_per_stage=blocks,
            n_conv_per_stage_decoder=decoder,
            conv_bias=True,
            deep_supervision=False,
            head_activation=ml_collections.FieldReference(None, field_type=str),
            dtype="float32",
        )
    )
    config.input_shape = (*patch, 1)
    return config
