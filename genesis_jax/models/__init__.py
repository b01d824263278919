"""The networks and their weights: Genesis U-Net (2D/3D, pytorch and keras variants; ``unet``), UNet++ (deep
supervision, pruning; ``unetpp``), task heads (``heads``), layers and kernel initialisers, a registry by name
(``registry``), a parameter summary and a forward-pass timer (``summary``, ``timing``), and the weights directory
every command exchanges (``weights``: ``save_weights``/``load_weights``, model config + variables). Knows nothing of
data or training."""

from genesis_jax.models.heads import ClassificationHead, GenesisClassifier
from genesis_jax.models.layers import BatchNorm
from genesis_jax.models.registry import MODELS, build_model
from genesis_jax.models.summary import activation_bytes, count_params, summarize
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
    "activation_bytes",
    "count_params",
    "summarize",
]
