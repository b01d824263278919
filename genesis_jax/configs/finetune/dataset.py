"""Segmentation on your own dataset folder: one label (binary, sigmoid) or every label (multi-class, softmax).

Run, after `genesis-jax data prepare --dataset=DIR` (and, for Genesis weights, `pretrain --config=pretrain/dataset`):
  genesis-jax finetune --config=finetune/dataset --dataset=DIR --label=liver --init=W1/weights --workdir=W2
      binary: the label (or nnU-Net region) named 'liver' in DIR/dataset.json against the rest; Dice loss.
  genesis-jax finetune --config=finetune/dataset --dataset=DIR --workdir=W3
      every label: a softmax network with background + one class per label (ids as in dataset.json), the
      cross-entropy + Dice loss; --label=liver,tumour picks a subset (other labels become background).
  ... :tiny  a CPU smoke run (16x16x8 patches, width-2 depth-2 network, 2 epochs of 2 steps)
The data are read exactly as prepared (the record of `data prepare`); the split is the dataset's split file. The
test set is the labelled imagesTs/ cases when there are some, else the validation cases.
Network: the Genesis U-Net 3D, PyTorch variant (the one pretrain/dataset trains, so --init transfers every layer but
the head, and the result exports to .pt). Adam 1e-3, batch 4, 64x64x32 patches (half centred on foreground),
plateau halving and early stopping after 20 epochs without a lower validation loss.
Expected: a summary line with the test Dice (per class for every label); W2/weights/metadata.json records
``labels`` (name -> class id in the predicted label maps) and ``head`` ('sigmoid' or 'softmax').
"""

import ml_collections

from genesis_jax.configs.common import parse_arg
from genesis_jax.configs.data.dataset import volume_data
from genesis_jax.configs.finetune.common import finetune_config, tiny


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, tiny=False)
    config = finetune_config(
        task="segmentation",
        model=dict(name="genesis_unet", variant="pytorch", ndim=3, base_width=32, depth=4, in_channels=1,
                   num_classes=1, head_activation="sigmoid", dtype="float32"),
        input_shape=(64, 64, 32, 1),
        loss="dice",
        learning_rate=1e-3,
        batch_size=4,
        patience=20,
        steps_per_epoch=100,
        data=volume_data(),
        sampling_mode="patches",
    )
    config.softmax_loss = "dice_ce"  # the loss when --dataset trains several labels (a softmax network)
    config.labels = ml_collections.ConfigDict({"background": 0})  # --dataset sets them: {name: class id}
    if opts.tiny:
        config = tiny(config)
    return config
