"""Writes Keras 2 HDF5 weight files with h5py, laid out as ``model.save`` / ``model.save_weights`` do, holding
the weights of ``torch_unet3d.UNet3D(keras=True)`` under the published layer names (depth_{i}_conv/bn, an
auto-named head)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

HEAD = "conv3d_15"


def keras_layers(state: dict, depth: int = 4) -> dict[str, dict[str, np.ndarray]]:
    """Published Keras layer -> {weight: array} from a UNet3D(keras=True) state_dict (kernels to (k,k,k,in,out))."""
    blocks = [f"down_tr{64 << d}" for d in range(depth)] + [f"up_tr{64 << d}" for d in reversed(range(depth - 1))]
    layers: dict[str, dict[str, np.ndarray]] = {}
    for b, block in enumerate(blocks):
        for i in range(2):
            prefix, index = f"{block}.ops.{i}", 2 * b + i
            weight = state[f"{prefix}.conv1.weight"].numpy()
            layers[f"depth_{index}_conv"] = {
                "kernel": weight.transpose(2, 3, 4, 1, 0),
                "bias": state[f"{prefix}.conv1.bias"].numpy(),
            }
            layers[f"depth_{index}_bn"] = {
                "gamma": state[f"{prefix}.bn1.weight"].numpy(),
                "beta": state[f"{prefix}.bn1.bias"].numpy(),
                "moving_mean": state[f"{prefix}.bn1.running_mean"].numpy(),
                "moving_variance": state[f"{prefix}.bn1.running_var"].numpy(),
            }
    layers[HEAD] = {
        "kernel": state["out_tr.final_conv.weight"].numpy().transpose(2, 3, 4, 1, 0),
        "bias": state["out_tr.final_conv.bias"].numpy(),
    }
    return layers


def write_keras_h5(path: Path, layers: dict[str, dict[str, np.ndarray]], whole_model: bool) -> Path:
    """Keras 2 layout: ``layer_names`` on the weights group, ``weight_names`` ('<layer>/<w>:0') on each layer
    group, datasets under ``<layer>/<layer>/<w>:0``; weightless layers listed too, as Keras does."""
    with h5py.File(path, "w") as f:
        if whole_model:
            f.attrs["keras_version"] = b"2.2.4"
            f.attrs["model_config"] = b'{"class_name": "Model"}'
            root = f.create_group("model_weights")
        else:
            root = f
        names = ["input_1"]
        for name, weights in layers.items():
            names.append(name)
            group = root.create_group(name)
            group.attrs["weight_names"] = np.array([f"{name}/{w}:0".encode() for w in weights])
            for w, value in weights.items():
                group.create_dataset(f"{name}/{w}:0", data=value)
            if name.endswith("_bn"):
                relu = name.replace("_bn", "_relu")
                names.append(relu)
                root.create_group(relu).attrs["weight_names"] = np.array([], dtype="S1")
        root.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S1")
        root.attrs["layer_names"] = np.array([n.encode() for n in names])
        root.attrs["backend"] = b"tensorflow"
    return path
