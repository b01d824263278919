"""Test helpers: nnU-Net's PyTorch network for a genesis_jax model config, built the way nnU-Net builds it from a
plans dict (``nnunetv2.utilities.get_network_from_plans``, or ``dynamic_network_architectures`` directly when
nnunetv2 is absent), with random weights; and its outputs in genesis_jax's channels-last layout."""

import pydoc

import numpy as np

from genesis_jax.interop.nnunet import architecture


def plans_architecture(model_config):
    """The 'architecture' entry of an nnU-Net plans configuration for this network."""
    class_name, kwargs = architecture(model_config)
    return {"network_class_name": class_name, "arch_kwargs": kwargs,
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}


def torch_network(model_config, seed=0, device=None, randomize=True):
    """The PyTorch network with every parameter random (norm scales too, so no block is an identity); with
    ``randomize=False`` nnU-Net's own initialisation (what a training run starts from)."""
    import torch

    arch = plans_architecture(model_config)
    kwargs = dict(arch["arch_kwargs"])
    for name in arch["_kw_requires_import"]:
        if kwargs[name] is not None:
            kwargs[name] = pydoc.locate(kwargs[name])
    network_class = pydoc.locate(arch["network_class_name"])
    torch.manual_seed(seed)
    if device == "meta":
        with torch.device("meta"):
            return network_class(input_channels=model_config["in_channels"], num_classes=model_config["num_classes"],
                                 deep_supervision=model_config.get("deep_supervision", False), **kwargs)
    network = network_class(input_channels=model_config["in_channels"], num_classes=model_config["num_classes"],
                            deep_supervision=model_config.get("deep_supervision", False), **kwargs)
    if randomize:
        with torch.no_grad():
            for p in network.parameters():
                p.normal_(0.0, 0.3)
    return network.eval()


def torch_outputs(network, x_channels_last):
    """The network's output(s) for a channels-last numpy input, as channels-last numpy arrays."""
    import torch

    x = torch.from_numpy(np.moveaxis(x_channels_last, -1, 1).copy())
    with torch.no_grad():
        out = network(x)
    outs = out if isinstance(out, (list, tuple)) else [out]
    return [np.moveaxis(o.numpy(), 1, -1) for o in outs]
