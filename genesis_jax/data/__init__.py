"""Data: the only sub-package that touches image files.

Modules, one concern each:
  ``readers``    NIfTI / MetaImage (.mhd) / DICOM series to one canonical (RAS) orientation, spacing, resampling.
  ``metaimage``  a small MetaImage (.mhd/.raw, .mha) reader and writer (LUNA16's format; no SimpleITK needed).
  ``dicom``      DICOM series to a volume (pydicom; JPEG 2000 via pillow or pylibjpeg).
  ``normalize``  HU windowing for CT, min-max / percentile for MR, compact uint16 storage of [0, 1] intensities.
  ``cubes``      the published Models Genesis sub-volume ("cube") extraction, vectorised, plus its per-voxel port.
  ``phantom``    a deterministic synthetic CT (body, lungs, vessels, bones, nodules, liver) with labels.
  ``samples``    real CT/MR volumes from the TotalSegmentator 2.18.0 sdist on PyPI, cached and sha256-pinned.
  ``patches``    centred crops with padding and foreground-aware random patches.
  ``builders``   TFDS builders writing ArrayRecord (no TensorFlow needed): Genesis cubes, LUNA16, LiTS, BraTS,
                 LIDC crops, LUNA16 candidates.
  ``sources``    random-access sources from a ``config.data`` block (in memory, or a prepared TFDS dataset).
  ``pipeline``   grain pipelines: sharded pre-training cubes, fine-tuning patches, global device batches.
  ``task_data``  a target task's data (``TaskData``): label subsets, target crops and candidates, test volumes,
                 the joint image/mask flip augmentation (numpy, in the grain workers).
  ``prepare``    the entry function behind ``genesis-jax data prepare``.
  ``folders``    a user's dataset folder (nnU-Net v2 raw or images/ + labels/): cases, labels by name, split file,
                 the record of its prepared settings.
  ``folder_prepare``  ``data prepare --dataset=DIR``: the folder's volumes, split and record; its cube datasets.
  ``dataset_flag``    what ``--dataset=DIR`` / ``--label=NAME`` do to a loaded config (the recorded settings).
Submodules are imported on use (``from genesis_jax.data import cubes``) so that importing the package is cheap.
"""
