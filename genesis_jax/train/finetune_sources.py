"""``load_task_data(config)``: read ``config.data`` into the in-memory :class:`TaskData` that fine-tuning uses.

Sources (``config.data.source``); file reading, normalisation and datasets all come from :mod:`genesis_jax.data`:

* ``phantom``: the synthetic CT phantom (offline; tests and ``:tiny`` configs). ``data.kind`` says what the task
  sees: 'volumes' (whole volumes, label ``data.label_ids``: liver), 'crops' (patches around nodules with their masks,
  the NCS form) or 'candidates' (patches centred on nodules = 1 and elsewhere in the body = 0, the NCC form).
  Train, validation and test phantoms are different seeds.
* ``volumes``: image/label files named in the config (``data.train``, ``data.validation``, ``data.test``: lists of
  'image_path:label_path'), read in canonical orientation, optionally resampled to ``data.spacing`` and normalised
  for ``data.modality``.
* ``sample``: the real TotalSegmentator sample CTs with their liver masks (see ``configs/finetune/liver_sample.py``).
* ``tfds``: the downstream datasets built by ``genesis-jax data prepare`` (LiTS, BraTS, LIDC crops, LUNA16
  candidates), from ``data.tfds_name`` in ``data.data_dir``.

Validation is a fixed set of patches drawn once (``data.validation_patches``) from the validation volumes, or the
validation crops/candidates as they are; the test set is whole volumes (sliding window) or crops/candidates.
"""

from __future__ import annotations

from typing import Sequence

import ml_collections
import numpy as np

from genesis_jax.train.finetune_data import ArrayPool, LabelledVolume, TaskData, VolumePatchSampler, crop_with_padding

ALL_PARTS = ("train", "validation", "test")


def _patch_shape(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    return tuple(int(s) for s in config.input_shape[:-1])


def _binary(label: np.ndarray, label_ids: Sequence[int]) -> np.ndarray:
    return np.isin(label, np.asarray(label_ids)).astype(np.uint8)


def crops_at(volume: LabelledVolume, centres: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Image and label crops of ``shape`` centred on each voxel of ``centres`` (padded at the borders)."""
    xs, ys = [], []
    for c in centres:
        start = [int(ci) - s // 2 for ci, s in zip(c, shape)]
        xs.append(crop_with_padding(volume.image, start, shape))
        ys.append(crop_with_padding(volume.label, start, shape))
    return np.stack(xs), np.stack(ys).astype(np.float32)


def _phantom_volumes(data: ml_collections.ConfigDict, seeds: Sequence[int], label_ids: Sequence[int]) -> list[LabelledVolume]:
    from genesis_jax.data.normalize import normalize_ct
    from genesis_jax.data.phantom import phantom_affine, synthetic_ct

    out = []
    for seed in seeds:
        ct = synthetic_ct(tuple(data.shape), seed=int(seed))
        out.append(LabelledVolume(normalize_ct(ct["image"]), _binary(ct["label"], label_ids), f"phantom{seed}",
                                  phantom_affine(ct["spacing"]), tuple(ct["spacing"])))
    return out


def _phantom_crops(vols: list[LabelledVolume], shape, per_volume: int, seed: int, candidates: bool):
    """Crops around foreground voxels (and, for candidates, as many negatives centred elsewhere in the body)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for vol in vols:
        fg = np.argwhere(vol.label > 0)
        if not len(fg):
            raise ValueError(f"{vol.name}: the phantom holds no voxel of the target label")
        pos = fg[rng.choice(len(fg), per_volume)]
        x, y = crops_at(vol, pos, shape)
        if not candidates:
            xs.append(x)
            ys.append(y)
            continue
        body = np.argwhere((vol.image > 0.3) & (vol.label == 0))  # soft tissue or denser, outside the target
        neg = body[rng.choice(len(body), per_volume)]
        xn, _ = crops_at(vol, neg, shape)
        xs.append(np.concatenate([x, xn]))
        ys.append(np.concatenate([np.ones(per_volume), np.zeros(per_volume)]).astype(np.float32))
    return np.concatenate(xs), np.concatenate(ys)


def _from_volumes(
    config: ml_collections.ConfigDict, train: list, validation: list, test: list, description: str
) -> TaskData:
    """TaskData for whole-volume segmentation (volumes given per part; validation patches drawn once)."""
    data = config.data
    shape = _patch_shape(config)
    sampler = VolumePatchSampler(train, shape, data.foreground_prob, data.augment_flips) if train else None
    val_source = validation or train
    if val_source:
        val = VolumePatchSampler(val_source, shape, data.foreground_prob).fixed_set(data.validation_patches, seed=1)
    else:
        val = (np.zeros((0, *shape, 1), np.float32), np.zeros((0, *shape, 1), np.float32))
    return TaskData("segmentation", sampler, val, test_volumes=test, description=description)


def _phantom(config: ml_collections.ConfigDict, parts: Sequence[str]) -> TaskData:
    data = config.data
    kind = data.get("kind", "volumes")
    label_ids = tuple(data.label_ids)
    vols = {p: _phantom_volumes(data, data[f"{p}_seeds"], label_ids) if p in parts else [] for p in ALL_PARTS}
    desc = f"synthetic CT phantom {tuple(data.shape)} ({kind}, label ids {label_ids})"
    if kind == "volumes":
        return _from_volumes(config, vols["train"], vols["validation"], vols["test"], desc)
    if kind not in ("crops", "candidates"):
        raise ValueError(f"config.data.kind must be 'volumes', 'crops' or 'candidates', got {kind!r}")
    shape, candidates = _patch_shape(config), kind == "candidates"
    arrays = {p: _phantom_crops(vols[p], shape, data.crops_per_volume, i, candidates) if vols[p] else None
              for i, p in enumerate(ALL_PARTS)}
    seg = not candidates
    train = ArrayPool(*arrays["train"], len(shape), data.augment_flips, seg) if arrays["train"] else None
    val = ArrayPool(*arrays["validation"], len(shape), False, seg) if arrays["validation"] else None
    test = ArrayPool(*arrays["test"], len(shape), False, seg) if arrays["test"] else None
    return TaskData(
        "classification" if candidates else "segmentation",
        train,
        (val.x, val.y) if val else (np.zeros((0,)), np.zeros((0,))),
        test_arrays=(test.x, test.y) if test else None,
        description=desc,
    )


def read_labelled_volume(pair: str, data: ml_collections.ConfigDict) -> LabelledVolume:
    """'image_path:label_path' -> a normalised LabelledVolume (canonical orientation, optional resampling)."""
    from pathlib import Path

    from genesis_jax.data.normalize import normalize_volume
    from genesis_jax.data.readers import check_same_grid, read_volume, resample

    image_path, sep, label_path = pair.rpartition(":")
    if not sep or not image_path or not label_path:
        raise ValueError(f"config.data: {pair!r} is not of the form 'image_path:label_path'")
    image, label = read_volume(image_path, kind="image"), read_volume(label_path, kind="label")
    check_same_grid(image, label)
    if data.get("spacing"):
        image, label = resample(image, tuple(data.spacing)), resample(label, tuple(data.spacing))
    name = Path(image_path).name.split(".")[0]
    return LabelledVolume(normalize_volume(image.array, data.modality), _binary(label.array, tuple(data.label_ids)),
                          name, image.affine, tuple(image.spacing))


def _volumes(config: ml_collections.ConfigDict, parts: Sequence[str]) -> TaskData:
    data = config.data
    vols = {p: [read_labelled_volume(s, data) for s in data.get(p, [])] if p in parts else [] for p in ALL_PARTS}
    desc = f"volumes from files ({', '.join(f'{len(v)} {p}' for p, v in vols.items())})"
    return _from_volumes(config, vols["train"], vols["validation"], vols["test"], desc)


SOURCES = {"phantom": _phantom, "volumes": _volumes}


def load_task_data(config: ml_collections.ConfigDict, parts: Sequence[str] = ALL_PARTS) -> TaskData:
    """The TaskData of ``config.data`` (only the listed ``parts`` are read; the others are empty)."""
    source = config.data.get("source")
    if source not in SOURCES:
        raise ValueError(f"config.data.source must be one of {sorted(SOURCES)}, got {source!r}")
    bad = set(parts) - set(ALL_PARTS)
    if bad:
        raise ValueError(f"load_task_data: unknown parts {sorted(bad)}; choose from {ALL_PARTS}")
    return SOURCES[source](config, parts)
