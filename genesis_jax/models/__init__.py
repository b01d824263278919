"""The networks and their weights: Genesis U-Net (2D/3D, pytorch and keras variants; ``unet``), UNet++ (deep
supervision, pruning; ``unetpp``), nnU-Net's residual-encoder and plain U-Nets (``resenc``, ``plain_unet``), task heads on an encoder (``heads``, ``encoder_classifier``), layers and kernel initialisers, the contract each network
declares beside its module (``spec``) and the registry of networks by name (``registry``, which says how to add
one), a parameter summary and a forward-pass timer (``summary``, ``timing``), and the weights directory every
command exchanges (``weights``: ``save_weights``/``load_weights``, model config + variables). Knows nothing of
data or training."""

from genesis_jax.models.heads import ClassificationHead, EncoderClassifier, GenesisClassifier
from genesis_jax.models.layers import BatchNorm
from genesis_jax.models.plain_unet import PlainConvUNet
from genesis_jax.models.resenc import ResidualEncoderUNet
from genesis_jax.models.registry import MODELS, adaptation_record, build_model, contract, network_spec
from genesis_jax.models.spec import AdaptationRecord, NetworkSpec
from genesis_jax.models.summary import layer_output_bytes, count_params, summarize
from genesis_jax.models.unet import GenesisUNet
from genesis_jax.models.unetpp import UNetPlusPlus

__all__ = [
    "AdaptationRecord",
    "BatchNorm",
    "ClassificationHead",
    "EncoderClassifier",
    "GenesisClassifier",
    "GenesisUNet",
    "MODELS",
    "NetworkSpec",
    "PlainConvUNet",
    "ResidualEncoderUNet",
    "UNetPlusPlus",
    "adaptation_record",
    "layer_output_bytes",
    "build_model",
    "contract",
    "count_params",
    "network_spec",
    "summarize",
]
