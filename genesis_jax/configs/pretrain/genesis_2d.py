"""Models Genesis 2D: the same restoration pre-training on axial slices (64x64) of the deformed CT cubes.

Run:
  genesis-jax pretrain --config=configs/pretrain/genesis_2d.py --workdir=runs/genesis_2d   # LUNA16 cubes prepared
  genesis-jax pretrain --config=configs/pretrain/genesis_2d.py:tiny --workdir=/tmp/genesis_2d_tiny    # CPU smoke run
Expected: as the 3D recipe, with a 2D Genesis U-Net (base width 32, 4 levels) on (64, 64, 1) slices; the tiny run
takes well under a minute on a 2-core CPU and ends with a preview PNG of slices.

How the slices are made: each step deforms the 3D cubes on the device with the published transforms (so in- and
out-painting boxes, local shuffling and the Bezier map are those of the 3D recipe) and then takes one random axial
slice per sample of the (input, target) pair. The published 2D variant (an ablation in the paper) used 2D
versions of the transforms; this is our equivalent, not a byte-level reproduction. Batch: 16 slices per device
(our choice; the published 2D batch size is not documented). Everything else (optimizer, schedule, early
stopping, checkpoints) follows configs/pretrain/genesis_chest_ct.py, which this file imports.
"""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location("_genesis_chest_ct", pathlib.Path(__file__).with_name(
    "genesis_chest_ct.py"))
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def get_config(arg: str = ""):
    c = _base.get_config(arg)
    c.model.ndim = 2
    c.slice_2d = True
    c.input_shape = (*c.input_shape[:2], 1)
    c.per_device_batch_size = 16
    if "tiny" in arg:
        c.global_batch_size = 16
    return c
