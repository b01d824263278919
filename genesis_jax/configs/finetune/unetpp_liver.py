"""UNet++ 2D liver segmentation on axial slices, with deep supervision; evaluation at any pruning level L1..L4.

UNet++ (Zhou et al., TMI 2019): the loss is the Dice loss summed over the four heads X^{0,1..4}; at test time the
network can be pruned to level L (only the nodes with i + j <= L run, with the same trained parameters), trading
accuracy for parameters and time. Recipe here: Adam lr 3e-4 (published UNet++), batch 16 slices of 96x96,
early stopping patience 20; whole volumes are segmented slice by slice with a sliding window.

Run (LiTS prepared by `genesis-jax data prepare --config=data/downstream:lits ...`):
  genesis-jax finetune --config=finetune/unetpp_liver --workdir=runs/unetpp_liver --init=scratch
  genesis-jax evaluate --config=finetune/unetpp_liver --weights=runs/unetpp_liver --out=runs/unetpp_L2 \
      --config.eval.prune_level=2
CPU check (synthetic phantom livers, 32x32 slices, base width 4, 3 epochs of 10 steps, evaluated on the held-out
phantom; tens of seconds):
  genesis-jax finetune --config=finetune/unetpp_liver:tiny --workdir=/tmp/unetpp_liver_tiny --init=scratch
Expected: a summary line with the test Dice/IoU of the full (deep-supervised, heads averaged) network; the evaluate
command prints the same metrics for the pruned network. experiments/notebooks/unetpp.ipynb tabulates all levels.
"""

import ml_collections

from genesis_jax.configs.common import parse_arg
from genesis_jax.configs.finetune.common import downstream_data, finetune_config, synthetic_data, tiny


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, tiny=False)
    config = finetune_config(
        task="segmentation",
        model=dict(name="unetpp", ndim=2, base_width=32, depth=4, in_channels=1, num_classes=1,
                   deep_supervision=True, mode="accurate", dropout=0.0, head_activation="sigmoid", dtype="float32"),
        input_shape=(96, 96, 1),
        loss="dice",
        learning_rate=3e-4,
        batch_size=16,
        patience=20,
        steps_per_epoch=100,
        data=downstream_data("lits"),
        sampling_mode="patches",
    )
    if opts.tiny:
        config = tiny(config, input_shape=(32, 32, 1), base_width=4, depth=4)
        config.global_batch_size = 8
        config.steps_per_epoch = 10
        config.max_epochs = 3
        config.optimizer.learning_rate = 3e-3
        config.data = synthetic_data("liver", shape=(48, 48, 24))
        config.sampling.splits.test = "validation"  # the synthetic source has no test split: the held-out phantom
        config.sampling.foreground_fraction = 0.7
        config.sampling.validation_patches = 16
    return config
