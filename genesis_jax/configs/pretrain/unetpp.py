"""UNet++ restoration pre-training: the Models Genesis task for UNet++ (3D by default, ``:2d`` on axial slices).

Run:
  genesis-jax pretrain --config=configs/pretrain/unetpp.py --workdir=runs/unetpp_genesis    # LUNA16 cubes prepared
  genesis-jax pretrain --config=configs/pretrain/unetpp.py:tiny --workdir=/tmp/unetpp_tiny       # CPU smoke run
  genesis-jax pretrain --config=configs/pretrain/unetpp.py:2d,tiny --workdir=/tmp/unetpp_2d_tiny
Expected: as the Genesis recipe (SGD 1.0, plateau halving, early stopping, checkpoints, previews) with UNet++
(widths 32..512, deep supervision): the MSE is taken on every head's sigmoid output and averaged (the deep
supervision loss); previews show the averaged prediction. The tiny runs end in about a minute on a 2-core CPU.
UNet++ pools four times, so cube sides must divide by 16 (64x64x32 does). Dropout 0.5 stays on in training as in
the published UNet++; --config.model.dropout=0 turns it off.
"""

import importlib.util
import pathlib

import ml_collections

_spec = importlib.util.spec_from_file_location("_genesis_chest_ct", pathlib.Path(__file__).with_name(
    "genesis_chest_ct.py"))
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def get_config(arg: str = ""):
    options = set(filter(None, arg.split(",")))
    two_d = "2d" in options
    c = _base.get_config(",".join(sorted(options - {"2d", "3d"})))
    c.model = ml_collections.ConfigDict(dict(
        name="unetpp", ndim=2 if two_d else 3, base_width=c.model.base_width, depth=c.model.depth, in_channels=1,
        num_classes=1, deep_supervision=True, mode="accurate", dropout=0.5, head_activation="sigmoid",
        dtype=c.model.dtype,
    ))
    c.apply_kwargs = ml_collections.ConfigDict(dict(return_all_heads=True))
    if "tiny" in options:
        c.model.depth = 2
    if two_d:
        c.slice_2d = True
        c.input_shape = (*c.input_shape[:2], 1)
    return c
