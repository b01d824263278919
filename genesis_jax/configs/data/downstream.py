"""Fine-tuning data: LiTS, BraTS, LIDC crops, LUNA16 candidates (prepared), and in-memory liver volumes.

Variants: `:lits` (LCS), `:brats` (BMS), `:lidc` (NCS), `:luna16_candidates` (NCC), `:liver_samples`,
`:liver_synthetic`.

Run (each needs its dataset in a directory, in the layout it is distributed as):
  genesis-jax data prepare --config=data/downstream:lits --config.data.manual_dir=/data/LiTS
      volume-<i>.nii + segmentation-<i>.nii -> whole volumes, liver = 1 (lesion merged into background as published;
      --config.data.lesion_label=1 counts it as liver); split 0-99 / 100-114 / 115-129.
  genesis-jax data prepare --config=data/downstream:brats --config.data.manual_dir=/data/BraTS2018
      <case>/<case>_flair.nii.gz + _seg.nii.gz -> whole FLAIR volumes (per-patient min-max), tumour = 1; folds from
      fold_1.csv ... fold_3.csv (the published files) when present, else a seeded 3-way split.
  genesis-jax data prepare --config=data/downstream:lidc --config.data.manual_dir=/data/ncs_data
      x_{train,valid,test}_64x64x32.npy + m_... -> one example per published crop.
  genesis-jax data prepare --config=data/downstream:luna16_candidates --config.data.manual_dir=/data/luna16
      candidates.csv + subset*/ -> one 64x64x32 crop per candidate (label = class); subsets 0-4 / 5-6 / 7-9.
      --config.data.max_negatives_per_scan=50 subsamples the ~550k negatives (seeded).
Each prints scans read, skipped (with reasons), examples per split and bytes.
In memory, no download by hand (fine-tuning demos; ``volume_source(config.data, split)`` -> image/label volumes):
  `:liver_samples`   the TotalSegmentator sample CTs resampled to 1.5 mm, label = liver (a model's output, not a
                     manual annotation): train on ct_abdomen, validate on ct_dicom (another patient).
  `:liver_synthetic` phantoms, label = the phantom's liver; 6 scans, 2 held out. Read with storage='tfds' and
``genesis_jax.data.pipeline.volume_source`` (whole volumes) or ``open_split`` (crops), then ``finetune_dataset``.
"""

import ml_collections

from genesis_jax.configs.common import parse_arg
from genesis_jax.configs.data import genesis_cubes

VARIANTS = {
    "lits": dict(builder="lits_liver", modality="ct", lesion_label=0,
                 index_splits=dict(train=(0, 99), validation=(100, 114), test=(115, 129))),
    "brats": dict(builder="brats18_flair", modality="mr", mr_method="minmax"),
    "lidc": dict(builder="lidc_nodule_crops", modality="ct", crop_shape=(64, 64, 32)),
    "luna16_candidates": dict(builder="luna16_candidates", modality="ct", crop_shape=(64, 64, 32),
                              max_negatives_per_scan=0,  # 0 = keep every candidate
                              subsets=dict(train=(0, 1, 2, 3, 4), validation=(5, 6), test=(7, 8, 9))),
    "liver_samples": dict(builder="genesis_cubes", storage="memory", source="samples", organ="liver",
                          target_spacing=(1.5, 1.5, 1.5),
                          samples=dict(train=("ct_abdomen",), validation=("ct_dicom",), test=())),
    "liver_synthetic": dict(builder="genesis_cubes", storage="memory", source="synthetic", organ="liver",
                            validation_fraction=0.34, synthetic=dict(num_scans=6, shape=(96, 96, 96))),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, dataset=tuple(VARIANTS))
    config = genesis_cubes.get_config("directory")
    config.data.update(dict(dict(name=opts.dataset, storage="tfds"), **VARIANTS[opts.dataset]))
    return config
