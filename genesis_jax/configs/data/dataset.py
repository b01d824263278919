"""Your own dataset folder (nnU-Net v2 raw, or images/ + labels/): its volumes prepared once, its settings recorded.

Run:
  genesis-jax data prepare --dataset=DIR
      reads DIR/dataset.json (channel_names, labels, numTraining, file_ending), imagesTr/ + labelsTr/ (+ imagesTs/,
      labelsTs/) or DIR/images/ + DIR/labels/; writes every case once (normalised by its modality: CT when channel 0
      is named "CT", else per-volume MR min-max), a split file by case (validation_fraction of the labelled
      training cases; edit it and rerun to change the split) and the record of these settings. Prints scans read,
      skipped (with reasons), the cases of each split, the labels, the split file and the record's path.
  genesis-jax data prepare --dataset=DIR --config.data.target_spacing=1.5,1.5,1.5
      the same, resampled to 1.5 mm first (recorded: later commands read the resampled volumes).
Later commands given --dataset=DIR (or the folder's name) read these settings; nothing is repeated:
  genesis-jax pretrain --config=pretrain/dataset --dataset=DIR --workdir=W1
  genesis-jax finetune --config=finetune/dataset --dataset=DIR --label=liver --init=W1/weights --workdir=W2
Fields: the ``data`` block of data/genesis_cubes (modality, HU window, MR method, target_spacing, seed,
validation_fraction, on_error, memory_buffer_mb) plus ``channel`` (which _XXXX file is the image; default 0),
``modality='auto'`` (from channel_names) and ``name='auto'`` (the folder's name).
"""

import ml_collections

from genesis_jax.configs.common import parse_arg


def volume_data(**overrides) -> ml_collections.ConfigDict:
    """The ``config.data`` block of a dataset folder's volumes (fields documented inline)."""
    data = ml_collections.ConfigDict(dict(
        builder="dataset_volumes",
        name="auto",                 # 'auto' = the folder's name
        source="folder",
        storage="tfds",
        split="train",
        manual_dir="",               # the dataset folder (--dataset=DIR sets it)
        data_dir="",                 # TFDS root; '' = $GENESIS_JAX_CACHE/tensorflow_datasets
        modality="auto",             # 'auto' (CT when channel_names names the channel "CT", else MR) | 'ct' | 'mr'
        channel=0,                   # which <case>_<XXXX> file is the network's input
        hu_min=-1000.0,
        hu_max=1000.0,
        mr_method="minmax",          # MR: 'minmax' (published) or 'percentile'
        mr_percentiles=(0.5, 99.5),
        target_spacing=(),           # () = native voxel grid; e.g. (1.5, 1.5, 1.5) mm
        seed=0,
        validation_fraction=0.2,     # share of the labelled training cases held out (by case) for a new split file
        on_error="skip",             # 'skip' (log + report the scan) or 'raise'
        overwrite=False,
        memory_buffer_mb=64,
        labels={"background": 0},    # from dataset.json when prepared
        label="",                    # fine-tuning: the label(s) trained, by name ('' = every label)
        split_cases={},              # from the split file when prepared
    ))
    data.update(overrides)
    return data


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parse_arg(arg)
    config = ml_collections.ConfigDict()
    config.data = volume_data()
    return config
