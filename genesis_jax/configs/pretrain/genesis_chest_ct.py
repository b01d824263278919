"""Models Genesis Chest CT pre-training: the published recipe (restore 64x64x32 CT cubes deformed on the device).

Run (GPU/TPU), after extracting the LUNA16 cubes once with the published rule (subsets 0-4 train, 5-6 validation):
  genesis-jax data prepare --config=data/luna16 --config.data.manual_dir=/data/luna16
  genesis-jax pretrain --config=pretrain/genesis_chest_ct --workdir=runs/genesis_chest_ct
  ... :keras     the paper's network (nearest up-sampling, 16,320,257 parameters) instead of the PyTorch one
  ... :step      LR halved every 40 epochs (the PyTorch script) instead of on a 10-epoch validation plateau
Expected: the validation MSE falls over the first tens of epochs; the run ends by early stopping (patience 50) and
writes runs/.../weights (best validation loss; usable as --init for fine-tuning). Rerunning the same command
resumes from the latest checkpoint.

CPU smoke run:
  genesis-jax pretrain --config=pretrain/genesis_chest_ct:tiny --workdir=/tmp/genesis_tiny
Expected: about a minute on a 2-core CPU (16x16x8 cubes from 6 synthetic CT phantoms, a base-width-2, depth-2 U-Net,
40 steps in 4 epochs), the validation loss falling, a preview PNG in /tmp/genesis_tiny/previews. The network has the
width and depth of the fine-tuning :tiny configs, so its weights/ can be their --init:
  genesis-jax finetune --config=finetune/lcs:tiny --workdir=/tmp/lcs_tiny --init=/tmp/genesis_tiny/weights

Recipe (models_genesis.md section 4): PyTorch UNet3D, MSE on the sigmoid output, SGD lr 1.0 momentum 0.9 no weight
decay, batch 6 per device (the global batch scales with the devices), N_train // batch steps per epoch, validation
on randomly deformed validation cubes (here with a fixed key, so epochs are comparable), ReduceLROnPlateau(0.5,
patience 10, min_delta 1e-4, min_lr 1e-6), early stopping patience 50, up to 10,000 epochs.
"""

import ml_collections

from genesis_jax.configs.common import parse_arg
from genesis_jax.configs.data import genesis_cubes, luna16
from genesis_jax.transforms import default_config

# The variant options (genesis_2d.py takes the same ones); e.g. ":tiny", ":keras,step,bf16".
OPTIONS = dict(tiny=False, variant=("pytorch", "keras"), schedule=("plateau", "step"), bf16=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, **OPTIONS)
    return recipe(tiny=opts.tiny, variant=opts.variant, schedule=opts.schedule, bf16=opts.bf16)


def recipe(*, tiny: bool = False, variant: str = "pytorch", schedule: str = "plateau",
           bf16: bool = False) -> ml_collections.ConfigDict:
    """The recipe with its options as arguments (the other pre-training configs build on it)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.prng_impl = "threefry2x32"  # "rbg" compiles much faster on CPU; the checkpoint's key follows this choice
    c.model = ml_collections.ConfigDict(dict(
        name="genesis_unet", variant=variant, ndim=3, base_width=32, depth=4,
        in_channels=1, num_classes=1, head_activation="sigmoid", dtype="bfloat16" if bf16 else "float32",
    ))
    c.input_shape = (64, 64, 32, 1)  # the network's input: the data cubes plus a channel (a slice for 2D configs)
    c.slice_2d = False
    # genesis_jax.data's block: the prepared LUNA16 cubes (data/luna16), read from their ArrayRecords
    c.data = luna16.get_config().data
    c.data.storage = "tfds"
    # The pretext task (genesis_jax.pretext) and its quality gate: the restoration MSE on held-out deformed cubes must
    # be <= max_ratio x the batch-mean predictor's, the identity MSE on clean cubes <= max_clean_mse
    c.pretext = ml_collections.ConfigDict(dict(
        name="genesis", gate=ml_collections.ConfigDict(dict(max_ratio=0.7, max_clean_mse=0.005)),
    ))
    # The deformations' rates (published) and the two documented choices (flip_mode 'all'|'published', windows)
    c.transforms = default_config()

    c.per_device_batch_size = 6
    c.global_batch_size = ml_collections.FieldReference(None, field_type=int)  # set to fix it whatever the devices
    c.num_devices = ml_collections.FieldReference(None, field_type=int)
    c.optimizer = ml_collections.ConfigDict(dict(
        name="sgd", learning_rate=1.0, momentum=0.9, nesterov=False, weight_decay=0.0
    ))
    # > 0: validation, best/ and weights/ use an exponential moving average of the parameters (genesis_jax.train.ema)
    c.ema_decay = 0.0
    c.schedule = ml_collections.ConfigDict(dict(
        kind=schedule, factor=0.5, patience=10, min_delta=1e-4, min_lr=1e-6,
        every_epochs=40,
    ))
    c.early_stopping = ml_collections.ConfigDict(dict(patience=50, min_delta=0.0))
    c.steps_per_epoch = ml_collections.FieldReference(None, field_type=int)  # None: N_train // global batch
    c.validation_batches = ml_collections.FieldReference(None, field_type=int)  # None: N_val // global batch
    c.max_epochs = 10000
    c.max_steps = ml_collections.FieldReference(None, field_type=int)
    c.init = ""  # a weights directory or a training workdir to start from (when the workdir has no checkpoint)
    c.apply_kwargs = ml_collections.ConfigDict()
    c.max_step_traces = ml_collections.FieldReference(None, field_type=int)  # e.g. 1: a recompile raises
    # Precise BatchNorm for the exported weights/ (genesis_jax.train.precise_bn): the keras variant's running
    # averages replaced by the exact statistics of this many training batches under the exported weights (the
    # pytorch variant always normalises with batch statistics: nothing to do); 0 = off.
    c.precise_bn = ml_collections.ConfigDict({"num_batches": 50})

    c.checkpoint = ml_collections.ConfigDict(dict(
        keep=3, async_save=True, every_steps=2000, every_seconds=1800.0, sync_every_steps=10
    ))
    c.logging = ml_collections.ConfigDict(dict(
        progress=True, tensorboard=True, every_steps=1, preview_every_steps=2000, preview_samples=4
    ))

    if tiny:
        c.prng_impl = "rbg"
        c.model.base_width = 2  # the width and depth of the fine-tuning :tiny configs, so these weights --init them
        c.model.depth = 2
        c.input_shape = (16, 16, 8, 1)
        # 6 synthetic CT phantoms of 64^3, cubes extracted in memory (96 train, 48 validation; about a second)
        c.data = genesis_cubes.get_config("tiny").data
        c.data.cubes.cube_shape = (16, 16, 8)
        c.data.cubes.margins = (8, 8, 4)
        c.data.synthetic.shape = (64, 64, 64)
        c.data.name = "pretrain_tiny"  # other cubes than genesis_cubes.py:tiny's, so another prepared dataset
        c.global_batch_size = 8
        c.steps_per_epoch = 10
        c.max_epochs = 4
        c.optimizer.learning_rate = 0.1
        c.checkpoint.every_steps = 20
        c.logging.preview_every_steps = 20
        c.precise_bn.num_batches = 4
    return c
