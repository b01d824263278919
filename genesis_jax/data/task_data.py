"""Task data: ``config.data`` (a :mod:`genesis_jax.data` block) read into what fine-tuning and evaluation consume.

Volumes, crops and datasets all come from :mod:`genesis_jax.data` (``volume_source``: in-memory samples/phantoms or
the prepared TFDS datasets) and training batches from its grain ``finetune_dataset`` (foreground-aware patches,
seeded epochs, sharded by process, checkpointable iterator). This module only adapts them to the task:

* ``config.sampling.mode`` says what a training example is: 'patches' (random patches of ``input_shape`` from whole
  volumes, centred on foreground with probability ``foreground_fraction``: LiTS, BraTS, the liver samples),
  'given' (the source's elements are already fixed-size crops: LIDC crops, LUNA16 candidates), or, from labelled
  volumes (phantoms, samples), 'crops' (crops of ``input_shape`` centred on the target, with its mask: the NCS form)
  and 'candidates' (crops centred on the target = 1 and on other tissue = 0: the NCC form).
* ``config.label_fraction`` keeps a seeded, nested share of the training examples (:func:`label_subset`): the
  annotation-efficiency study's "x% of the labels" (scans for whole-volume tasks, crops otherwise).
* ``config.sampling.augment_flips``: random flips along every spatial axis, jointly for image and mask (published:
  "random flipping").
* The test set is whole volumes (:class:`LabelledVolume`, predicted by sliding window) or arrays of crops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import ml_collections
import numpy as np

from genesis_jax.data.normalize import dequantize_unit
from genesis_jax.data.patches import crop_centered
from genesis_jax.data.sources import ArraySource, volume_source

SAMPLING_MODES = ("patches", "given", "crops", "candidates")


class Subset:
    """Random access over the chosen indices of a source."""

    def __init__(self, source: Any, indices: Sequence[int]):
        self.source, self.indices = source, [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.source[self.indices[i]]


def label_subset(source: Any, fraction: float, seed: int = 0) -> Any:
    """The first ceil(fraction * N) examples of a seeded permutation (at least one): nested across fractions for
    one seed, so 5% of the labels is a subset of 10%."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"config.label_fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return source
    keep = max(1, math.ceil(fraction * len(source)))
    return Subset(source, np.sort(np.random.default_rng([seed, 7919]).permutation(len(source))[:keep]))


def flip_transform(example: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Flip image (*spatial, C) and, when it is a mask of the same grid, label, along each spatial axis with p=1/2."""
    image, label = example["image"], example["label"]
    is_mask = np.ndim(label) == np.ndim(image)
    for axis in range(image.ndim - 1):
        if rng.random() < 0.5:
            image = np.flip(image, axis)
            if is_mask:
                label = np.flip(label, axis)
    return {**example, "image": np.ascontiguousarray(image), "label": np.ascontiguousarray(label) if is_mask else label}


@dataclass
class LabelledVolume:
    """A whole test volume: image in [0, 1] (X, Y, Z), label on the same grid (binary, or class ids), and where it
    lies in the world (``affine``: voxel -> RAS mm; NIfTI predictions are written with it)."""

    image: np.ndarray
    label: np.ndarray
    name: str = "volume"
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    spacing: tuple[float, ...] = (1.0, 1.0, 1.0)

    def __post_init__(self):
        self.image = np.asarray(self.image, np.float32)
        self.label = np.asarray(self.label)
        if self.image.shape[: self.label.ndim] != self.label.shape:
            raise ValueError(f"{self.name}: image {self.image.shape} and label {self.label.shape} grids differ")


def _to_float(array: Any) -> np.ndarray:
    array = np.asarray(array)
    return dequantize_unit(array) if array.dtype == np.uint16 else array.astype(np.float32)


def as_labelled_volume(element: dict[str, Any], index: int = 0, keep_classes: bool = False) -> LabelledVolume:
    """A volume element of a data source ({'image' (uint16 or float), 'label', 'scan_id'?, 'spacing'?, 'affine'?});
    the label binary (> 0), or its class ids as they are with ``keep_classes`` (a multi-class task)."""
    spacing = tuple(float(s) for s in np.asarray(element.get("spacing", (1.0, 1.0, 1.0))))
    affine = element.get("affine")
    affine = np.diag([*spacing, 1.0]) if affine is None else np.asarray(affine, np.float64)
    name = element.get("scan_id", f"volume{index}")
    name = name.decode() if isinstance(name, bytes) else str(name)
    label = np.asarray(element["label"])
    label = label.astype(np.uint8) if keep_classes else (label > 0).astype(np.uint8)
    return LabelledVolume(_to_float(element["image"]), label, name, affine, spacing)


def target_crops(
    volumes: Sequence[LabelledVolume], shape: Sequence[int], per_volume: int, seed: int, candidates: bool
) -> ArraySource:
    """Crops of ``shape`` centred on random target voxels (label 1 = the mask, 'crops'; or label 1 = positive,
    'candidates') and, for candidates, as many centred on other tissue (label 0). Images stay float32 [0, 1]."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for vol in volumes:
        target = np.argwhere(vol.label > 0)
        if not len(target):
            raise ValueError(f"{vol.name}: no voxel of the target label to centre crops on")
        for centre in target[rng.choice(len(target), per_volume)]:
            images.append(crop_centered(vol.image, centre, shape))
            labels.append(crop_centered(vol.label, centre, shape) if not candidates else np.uint8(1))
        if candidates:
            other = np.argwhere((vol.image > 0.3) & (vol.label == 0))  # denser than fat, outside the target
            for centre in other[rng.choice(len(other), per_volume)]:
                images.append(crop_centered(vol.image, centre, shape))
                labels.append(np.uint8(0))
    return ArraySource(image=np.stack(images).astype(np.float32), label=np.stack(labels).astype(np.uint8))


@dataclass
class TaskData:
    """Everything a fine-tuning run reads. ``train`` and ``validation`` are random-access sources of examples
    {'image', 'label'} (whole volumes when ``patch_shape`` is set, fixed-size crops otherwise); the test set is
    whole volumes (sliding window) or arrays (crops or candidates)."""

    task: str
    train: Any
    validation: Any
    patch_shape: tuple[int, ...] | None
    test_volumes: list[LabelledVolume] = field(default_factory=list)
    test_arrays: tuple[np.ndarray, np.ndarray] | None = None
    description: str = ""


def _arrays(source: Any) -> tuple[np.ndarray, np.ndarray]:
    elements = [source[i] for i in range(len(source))]
    images = np.stack([_to_float(e["image"]) for e in elements])[..., None]
    labels = np.stack([np.asarray(e["label"]) for e in elements]).astype(np.float32)
    return images, labels[..., None] if labels.ndim == images.ndim - 1 else labels.reshape(len(labels), -1)


def load_task_data(
    config: ml_collections.ConfigDict, parts: Sequence[str] = ("train", "validation", "test")
) -> TaskData:
    """Read the parts of ``config.data`` that are asked for (the others stay empty), as ``config.sampling`` says."""
    sampling = config.sampling
    mode = sampling.mode
    if mode not in SAMPLING_MODES:
        raise ValueError(f"config.sampling.mode must be one of {SAMPLING_MODES}, got {mode!r}")
    shape = tuple(int(s) for s in config.input_shape[:-1])
    splits = dict(sampling.splits)
    raw = {p: volume_source(config.data, splits[p]) if p in parts else None for p in ("train", "validation", "test")}
    desc = f"{config.data.get('builder', '?')}/{config.data.get('source', '?')} ({mode}; splits {splits})"
    if mode == "patches":
        multiclass = int(config.model.get("num_classes", 1)) > 1
        test = [as_labelled_volume(raw["test"][i], i, multiclass) for i in range(len(raw["test"]))] \
            if raw["test"] else []
        return TaskData(config.task, raw["train"], raw["validation"], shape, test_volumes=test, description=desc)
    if mode == "given":
        test = _arrays(raw["test"]) if raw["test"] is not None else None
        return TaskData(config.task, raw["train"], raw["validation"], None, test_arrays=test, description=desc)
    crops = {}
    for i, part in enumerate(("train", "validation", "test")):
        if raw[part] is not None:
            vols = [as_labelled_volume(raw[part][j], j) for j in range(len(raw[part]))]
            crops[part] = target_crops(vols, shape, sampling.crops_per_volume, seed=config.seed * 31 + i,
                                       candidates=mode == "candidates")
    test = _arrays(crops["test"]) if "test" in crops else None
    return TaskData(config.task, crops.get("train"), crops.get("validation"), None, test_arrays=test,
                    description=desc)
