"""The networks: Genesis U-Net (2D/3D, pytorch and keras variants), UNet++ (deep supervision, pruning), task heads,
a registry by name and a parameter summary. Knows nothing of data or training."""

from genesis_jax.models.heads import ClassificationHead, GenesisClassifier
from genesis_jax.models.layers import BatchNorm
from genesis_jax.models.registry import MODELS, build_model
from genesis_jax.models.summary import count_params, summarize
from genesis_jax.models.unet import GenesisUNet
from genesis_jax.models.unetpp import UNetPlusPlus

__all__ = [
    "BatchNorm",
    "ClassificationHead",
    "GenesisClassifier",
    "GenesisUNet",
    "MODELS",
    "UNetPlusPlus",
    "build_model",
    "count_params",
    "summarize",
]
