"""The fine-tuning config schema in one place: every recipe in ``genesis_jax.configs.finetune`` calls these.

``finetune_config(...)`` returns the full ml_collections config with the published defaults of Models Genesis §5
(Adam; ReduceLROnPlateau factor 0.5, patience 6, min_delta 1e-4, min lr 1e-6; Keras early stopping on the
validation loss; best-by-validation weights kept) and the same run settings as pre-training (mesh, checkpoints,
logging). ``data`` is a :mod:`genesis_jax.data` block, normally :func:`downstream_data` (the target-task variants of
``genesis_jax.configs.data.downstream``, so a prepared dataset is found with the settings it was prepared with).
Fine-tuning augments on the device (``config.augment``, on for segmentation) and can average its parameters
(``config.ema_decay``). ``tiny(config)`` shrinks a config to something that trains in seconds on a CPU (tests and CI).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ml_collections

from genesis_jax.configs.data import downstream
from genesis_jax.transforms import augment


def downstream_data(variant: str, **overrides: Any) -> ml_collections.ConfigDict:
    """``config.data`` of ``data/downstream:<variant>`` with ``overrides`` applied."""
    data = downstream.get_config(variant).data
    data.update(overrides)
    return data


def synthetic_data(organ: str, num_scans: int = 3, shape: Sequence[int] = (48, 48, 32)) -> ml_collections.ConfigDict:
    """Synthetic CT phantoms for the ``:tiny`` configs (offline, fast), label = the phantom's ``organ`` ('liver',
    'nodule', ...): with 3 scans, two train and one is held out (the synthetic source has no test split, so tiny
    configs evaluate on the held-out 'validation' phantom)."""
    return downstream_data("liver_synthetic", organ=organ, validation_fraction=0.34,
                           synthetic=dict(num_scans=num_scans, shape=tuple(shape)))


def finetune_config(
    *,
    task: str,
    model: dict[str, Any],
    input_shape: Sequence[int],
    loss: str,
    learning_rate: float,
    batch_size: int,
    patience: int,
    data: ml_collections.ConfigDict,
    sampling_mode: str,
    steps_per_epoch: int = 100,
) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = task  # 'segmentation' (binary, sigmoid) or 'classification'
    c.seed = 0
    c.prng_impl = "threefry2x32"  # 'rbg' compiles much faster on CPU
    c.model = ml_collections.ConfigDict(model)
    c.input_shape = tuple(input_shape)  # (X, Y, Z, C) of a training patch; (X, Y, C) for a 2D network
    c.loss = loss  # 'dice' | 'bce' | 'bce_dice' | 'cross_entropy' | 'mse' (summed over heads with deep supervision)
    c.init = ml_collections.ConfigDict(dict(
        checkpoint="scratch",  # a weights directory or a training workdir to transfer from, or 'scratch' (--init)
        scratch_init="he_uniform",  # scratch: 'uniform' | 'glorot_uniform' | 'he_uniform' (the published baselines)
        keep_head=False,  # segmentation: keep the pre-trained 1x1x1 head (published NCS notebook) or a new one
        freeze_encoder=False,  # linear probe: the encoder gets no updates
        transferred_lr_scale=1.0,  # learning rate of transferred layers = optimizer.learning_rate * this
        strict=False,  # refuse weights that do not fit fully (another variant, stem or shape); else one warning line
    ))
    c.optimizer = ml_collections.ConfigDict(dict(name="adam", learning_rate=learning_rate, b1=0.9, b2=0.999,
                                                 eps=1e-8, weight_decay=0.0))
    c.schedule = ml_collections.ConfigDict(dict(kind="plateau", factor=0.5, patience=6, min_delta=1e-4, min_lr=1e-6,
                                                every_epochs=40))
    c.early_stopping = ml_collections.ConfigDict(dict(patience=patience, min_delta=0.0))
    c.select_best = True  # evaluate the best-by-validation weights (Keras ModelCheckpoint); False: the last ones
    c.global_batch_size = batch_size
    c.num_devices = ml_collections.FieldReference(None, field_type=int)
    c.steps_per_epoch = steps_per_epoch
    c.max_epochs = 10000  # published: 10,000 with early stopping
    c.max_steps = ml_collections.FieldReference(None, field_type=int)
    c.label_fraction = 1.0  # share of the training examples (scans or crops) that keep their labels
    c.data = data
    c.sampling = ml_collections.ConfigDict(dict(
        mode=sampling_mode,  # 'patches' | 'given' | 'crops' | 'candidates' (see genesis_jax.data.task_data)
        splits=dict(train="train", validation="validation", test="test"),  # data split read for each part
        foreground_fraction=0.5,  # 'patches': share of patches centred on a foreground voxel
        patches_per_volume=4,
        crops_per_volume=4,  # 'crops' / 'candidates': crops cut per volume (per class for candidates)
        validation_patches=64,  # 'patches': validation patches drawn once; crops: the whole validation split
        augment_flips=task != "segmentation",  # host-side flips; segmentation mirrors on the device (augment)
        subset_seed=0,  # which examples keep their labels when label_fraction < 1
    ))
    # Augmentation on the device, inside the jitted train step (genesis_jax.transforms.augment: mirroring, rotation,
    # scaling, noise, blur, brightness in HU, contrast, low resolution, gamma; per-sample probabilities). On for
    # segmentation, off for classification (--config.augment.enabled=True turns it on; class labels are never changed).
    c.augment = augment.default_config(enabled=task == "segmentation")
    # Exponential moving average of the parameters (genesis_jax.train.ema), 0 = off. When on, validation, the best
    # checkpoint, weights/ and the test evaluation use the averaged parameters (summary.json 'evaluated' says so).
    c.ema_decay = 0.0
    # Precise BatchNorm (genesis_jax.train.precise_bn): before each validation, the export to weights/ and the test
    # evaluation, running averages are replaced by the exact statistics of this many unlabelled training batches
    # under the current weights (networks whose BatchNorm always uses batch statistics are left alone); 0 = off.
    c.precise_bn = ml_collections.ConfigDict(dict(num_batches=50))
    c.eval = ml_collections.ConfigDict(dict(
        window=tuple(input_shape[:-1]), overlap=0.5, blend="gaussian", batch_size=4, threshold=0.5,
        prune_level=ml_collections.FieldReference(None, field_type=int),  # UNet++: evaluate pruned to L1..L4
        mode="accurate",  # UNet++ deep supervision: 'accurate' (mean of heads) or 'fast' (one head)
        save_predictions=False,  # NIfTI probability maps of the test volumes, on their grid
        overlays=True,  # overlay PNGs of the test volumes
        largest_component=False,  # keep only the largest connected component (binary; softmax: of each class)
        overlay_class="",  # softmax: the class the overlay PNGs outline ('' = every foreground class together)
    ))
    c.checkpoint = ml_collections.ConfigDict(dict(keep=2, async_save=True, every_steps=1000, every_seconds=1800.0,
                                                  sync_every_steps=10))
    c.logging = ml_collections.ConfigDict(dict(progress=True, tensorboard=True, every_steps=10))
    return c


def tiny(
    c: ml_collections.ConfigDict,
    input_shape: Sequence[int] = (16, 16, 8, 1),
    base_width: int = 2,
    depth: int = 2,
) -> ml_collections.ConfigDict:
    """A CPU-sized copy: narrow network, small patches, 2 epochs of 2 steps, batch 2, the rbg PRNG, precise
    BatchNorm on 2 batches."""
    c = ml_collections.ConfigDict(c.to_dict())
    c.prng_impl = "rbg"
    c.model.base_width = base_width
    c.model.depth = depth
    if c.model.get("name") == "genesis_classifier":
        c.model.hidden = 16
    c.input_shape = tuple(input_shape)
    c.global_batch_size = 2
    c.num_devices = ml_collections.FieldReference(None, field_type=int)
    c.max_steps = ml_collections.FieldReference(None, field_type=int)
    c.steps_per_epoch = 2
    c.max_epochs = 2
    c.sampling.validation_patches = 4
    c.precise_bn.num_batches = 2
    c.sampling.crops_per_volume = 4
    c.eval.window = tuple(input_shape[:-1])
    c.eval.overlap = 0.0  # tiling without overlap: a few windows per test volume
    c.eval.batch_size = 4
    c.eval.prune_level = ml_collections.FieldReference(None, field_type=int)
    c.checkpoint.async_save = False
    c.logging.every_steps = 1
    return c
