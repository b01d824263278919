"""Models Genesis pre-training on your own dataset folder: every image of it (labelled or not, imagesTs included).

Run, after `genesis-jax data prepare --dataset=DIR` (the volumes, their split and settings, prepared once):
  genesis-jax pretrain --config=pretrain/dataset --dataset=DIR --workdir=W1
      cuts 64x64x32 cubes from the prepared volumes (once per cube rule; train: every case but the validation
      ones; validation: those), then trains the published recipe (PyTorch UNet3D variant, SGD 1.0, plateau
      schedule, early stopping). W1/weights is the --init of `finetune --config=finetune/dataset`.
  genesis-jax pretrain --config=pretrain/dataset:tiny --dataset=DIR --workdir=W1
      a CPU smoke run: 16x16x8 cubes, a width-2 depth-2 network, 2 epochs of 3 steps of 8 cubes.
Cube rule (config.data.cubes): the foreground test of data/genesis_cubes:samples (>= 50% of a cube's voxels above
-400 HU, or 0.3 of an MR volume's range), the published margins 100/100/30 with ``adapt_margins=True`` (a scan
too small for them gets the largest margins that fit), 32 cubes per scan. A scan smaller than the cube itself is
skipped by name; the summary says which field to change. ``criterion=tissue`` gives the published chest-CT test.
Expected: the validation MSE falls; W1 holds weights/, checkpoints/, metrics.csv and previews/.
"""

import ml_collections

from genesis_jax.configs.common import parse_arg
from genesis_jax.configs.data.genesis_cubes import PUBLISHED_CUBES
from genesis_jax.configs.pretrain.genesis_chest_ct import recipe

DATASET_CUBES = dict(PUBLISHED_CUBES, criterion="foreground", foreground_threshold=0.3, min_foreground_fraction=0.5,
                     adapt_margins=True)


def dataset_cube_data(cube_shape) -> ml_collections.ConfigDict:
    """The placeholder ``config.data`` of a dataset-folder pre-training: the cube rule; ``--dataset`` fills the
    rest from the folder's record."""
    return ml_collections.ConfigDict(dict(builder="dataset_cubes", name="", storage="tfds", split="train",
                                          data_dir="", seed=0, cubes=dict(DATASET_CUBES, cube_shape=tuple(cube_shape))))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, tiny=False, variant=("pytorch", "keras"))
    c = recipe(tiny=opts.tiny, variant=opts.variant)
    c.data = dataset_cube_data(c.input_shape[:-1])
    if opts.tiny:
        c.data.cubes.cubes_per_scan = 16
        c.data.cubes.max_attempts = 400
        c.data.cubes.min_foreground_fraction = 0.3
        c.global_batch_size = 8  # divides over 1, 2, 4 or 8 devices
        c.steps_per_epoch = 3
        c.max_epochs = 2
        c.checkpoint.every_steps = 6
        c.logging.preview_every_steps = 6
        c.precise_bn.num_batches = 2
    return c
