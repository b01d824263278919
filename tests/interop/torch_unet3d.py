"""A PyTorch restatement of the published ``UNet3D`` (pytorch/unet3d.py), written for the parity tests from the
reference description (models_genesis.md §1.2, §1.4): module names, channel counts and the always-batch-statistics
``ContBatchNorm3d``. ``width`` scales the channels (32 published); ``keras=True`` turns it into the Keras model's
inference behaviour instead (nearest up-sampling, no up_conv, BatchNorm eps 1e-3 on running statistics), used to
check the .h5 import numerically.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ContBatchNorm3d(nn.modules.batchnorm._BatchNorm):
    """BatchNorm that normalises with the batch statistics whatever the mode (and updates unused running stats)."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() != 5:
            raise ValueError(f"expected 5D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        training = True  # the published quirk: batch statistics in eval() too
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, training, self.momentum, self.eps
        )


class LUConv(nn.Module):
    def __init__(self, in_chan: int, out_chan: int, keras: bool):
        super().__init__()
        self.conv1 = nn.Conv3d(in_chan, out_chan, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm3d(out_chan, eps=1e-3) if keras else ContBatchNorm3d(out_chan)
        self.relu1 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu1(self.bn1(self.conv1(x)))


def _make_nconv(in_channel: int, depth: int, width: int, double_channel: bool, keras: bool) -> nn.Sequential:
    if double_channel:
        out = width * 2 ** (depth + 1)
        return nn.Sequential(LUConv(in_channel, out, keras), LUConv(out, out, keras))
    out = width * 2**depth
    return nn.Sequential(LUConv(in_channel, out, keras), LUConv(out, 2 * out, keras))


class DownTransition(nn.Module):
    def __init__(self, in_channel: int, depth: int, width: int, keras: bool):
        super().__init__()
        self.ops = _make_nconv(in_channel, depth, width, False, keras)
        self.depth = depth
        self.maxpool = nn.MaxPool3d(2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        before_pool = self.ops(x)
        out = before_pool if self.depth == 3 else self.maxpool(before_pool)
        return out, before_pool


class UpTransition(nn.Module):
    def __init__(self, in_chans: int, out_chans: int, depth: int, width: int, keras: bool):
        super().__init__()
        self.keras = keras
        if not keras:
            self.up_conv = nn.ConvTranspose3d(in_chans, out_chans, kernel_size=2, stride=2)
        self.ops = _make_nconv(in_chans + out_chans // 2, depth, width, True, keras)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=2, mode="nearest") if self.keras else self.up_conv(x)
        return self.ops(torch.cat((up, skip), 1))


class OutputTransition(nn.Module):
    def __init__(self, in_chans: int, n_labels: int):
        super().__init__()
        self.final_conv = nn.Conv3d(in_chans, n_labels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.final_conv(x))


class UNet3D(nn.Module):
    def __init__(self, n_class: int = 1, width: int = 32, keras: bool = False):
        super().__init__()
        w = width
        self.down_tr64 = DownTransition(1, 0, w, keras)
        self.down_tr128 = DownTransition(2 * w, 1, w, keras)
        self.down_tr256 = DownTransition(4 * w, 2, w, keras)
        self.down_tr512 = DownTransition(8 * w, 3, w, keras)
        self.up_tr256 = UpTransition(16 * w, 16 * w, 2, w, keras)
        self.up_tr128 = UpTransition(8 * w, 8 * w, 1, w, keras)
        self.up_tr64 = UpTransition(4 * w, 4 * w, 0, w, keras)
        self.out_tr = OutputTransition(2 * w, n_class)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out64, skip64 = self.down_tr64(x)
        out128, skip128 = self.down_tr128(out64)
        out256, skip256 = self.down_tr256(out128)
        self.out512, _ = self.down_tr512(out256)
        up256 = self.up_tr256(self.out512, skip256)
        up128 = self.up_tr128(up256, skip128)
        self.out_up_64 = self.up_tr64(up128, skip64)
        return self.out_tr(self.out_up_64)


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random weights everywhere, with non-trivial BatchNorm affine parameters and running statistics."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            u = torch.rand(tensor.shape, generator=generator)
            if ".bn1." not in name:
                continue  # conv weights keep PyTorch's default (fan-in scaled) initialisation
            if name.endswith("weight"):
                tensor.copy_(0.5 + u)
            elif name.endswith("bias") or name.endswith("running_mean"):
                tensor.copy_(0.4 * (u - 0.5))
            elif name.endswith("running_var"):
                tensor.copy_(0.5 + u)
    return model
