"""nnU-Net's default network, ``dynamic_network_architectures``' ``PlainConvUNet``: the encoder-decoder of
:mod:`genesis_jax.models.resenc` with plain stages (``n_blocks_per_stage`` conv blocks each, the first strided) and
no stem. Parameter tree: ``encoder_{s}/{conv_i,norm_i}``, ``decoder_{level}/{up,conv_i,norm_i}``, ``head*``."""

from __future__ import annotations

from genesis_jax.models.resenc import DynamicUNet, nnunet_spec


class PlainConvUNet(DynamicUNet):
    """``dynamic_network_architectures.architectures.unet.PlainConvUNet``; ``n_blocks_per_stage`` counts the conv
    blocks of each stage (nnU-Net's ``n_conv_per_stage``)."""

    residual_encoder = False
    n_blocks_per_stage: tuple[int, ...] = (2, 2, 2, 2, 2, 2)
    n_conv_per_stage_decoder: tuple[int, ...] = (2, 2, 2, 2, 2)


SPEC = nnunet_spec(
    "plain_unet", PlainConvUNet,
    {"name": "plain_unet", "ndim": 3, "features_per_stage": (2, 4, 4), "strides": (1, 2, 2), "kernel_sizes": 3,
     "n_blocks_per_stage": (2, 2, 2), "n_conv_per_stage_decoder": (2, 2)},
    stem="encoder_0/conv_0",
)
