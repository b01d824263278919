"""The fine-tuning config schema in one place: the config files under ``configs/finetune/`` call these.

``finetune_config(...)`` returns the full ml_collections config with the published defaults of §5 (Adam, plateau
0.5/6/1e-4/1e-6, Keras early stopping on the validation loss, Gaussian sliding window with half overlap);
``tiny(config)`` shrinks a config to something that trains in seconds on a CPU (tests and CI).
"""

from __future__ import annotations

from typing import Any, Sequence

import ml_collections


def finetune_config(
    *,
    task: str,
    model: dict[str, Any],
    input_shape: Sequence[int],
    loss: str,
    learning_rate: float,
    batch_size: int,
    patience: int,
    data: dict[str, Any],
    steps_per_epoch: int = 100,
    optimizer: str = "adam",
) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = task
    c.model = ml_collections.ConfigDict(model)
    c.input_shape = tuple(input_shape)
    c.loss = loss
    c.init = ml_collections.ConfigDict(
        dict(
            checkpoint="scratch",  # a weights directory or a pre-training workdir; 'scratch' (--init sets this)
            scratch_init="he_uniform",  # for scratch: 'uniform' | 'glorot_uniform' | 'he_uniform' (published rows)
            keep_head=False,  # segmentation: keep the pre-trained 1x1x1 head (published NCS notebook) or a new one
            freeze_encoder=False,  # linear probe: no updates to the encoder
            transferred_lr_scale=1.0,  # learning rate of transferred layers = lr * this
        )
    )
    opt = dict(name=optimizer, learning_rate=learning_rate)
    if optimizer == "adam":
        opt.update(b1=0.9, b2=0.999, eps=1e-8)
    elif optimizer == "sgd":
        opt.update(momentum=0.9)
    c.optimizer = ml_collections.ConfigDict(opt)
    c.batch_size = batch_size
    c.steps_per_epoch = steps_per_epoch
    c.max_epochs = 10000  # published: 10,000 with early stopping
    c.early_stopping = ml_collections.ConfigDict(dict(patience=patience, min_delta=0.0))
    c.plateau = ml_collections.ConfigDict(dict(factor=0.5, patience=6, min_delta=1e-4, min_lr=1e-6))
    c.label_fraction = 1.0
    c.seed = 0
    c.data = ml_collections.ConfigDict(data)
    if "subset_seed" not in c.data:
        c.data.subset_seed = 0
    c.eval = ml_collections.ConfigDict(
        dict(
            window=tuple(input_shape[:-1]),
            overlap=0.5,
            blend="gaussian",
            batch_size=4,
            threshold=0.5,
            prune_level=ml_collections.FieldReference(None, field_type=int),
            mode="accurate",
            save_predictions=False,
            overlays=True,
        )
    )
    c.log_every_steps = 10
    c.checkpoint_every_steps = 0  # 0: at the end of every epoch only
    c.progress = True
    return c


def tiny(
    c: ml_collections.ConfigDict,
    input_shape: Sequence[int] = (16, 16, 8, 1),
    base_width: int = 2,
    depth: int = 2,
) -> ml_collections.ConfigDict:
    """A CPU-sized copy: narrow network, small patches, 2 epochs of 2 steps, batch 2."""
    c = ml_collections.ConfigDict(c.to_dict())
    c.model.base_width = base_width
    c.model.depth = depth
    if c.model.get("name") == "genesis_classifier":
        c.model.hidden = 16
    c.input_shape = tuple(input_shape)
    c.batch_size = 2
    c.steps_per_epoch = 2
    c.max_epochs = 2
    c.log_every_steps = 1
    c.eval.window = tuple(input_shape[:-1])
    c.eval.batch_size = 2
    c.eval.prune_level = ml_collections.FieldReference(None, field_type=int)
    return c
