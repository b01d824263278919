"""Random-access data sources for the grain pipelines, chosen by a ``config.data`` block.

``config.data.storage``:
  'memory'  build the examples now, in RAM, from ``config.data.source``: 'synthetic' (phantoms), 'samples' (the
            TotalSegmentator sample volumes) or 'directory' (``manual_dir``). Right for tests, demos and small data.
  'tfds'    open the ArrayRecord dataset that ``genesis-jax data prepare`` wrote (no TensorFlow involved).
Either way an element is a dict of NumPy arrays in the stored form: ``cube`` (uint16-quantised [0, 1]) for
pre-training; ``image`` (uint16-quantised) and ``label`` (uint8) for fine-tuning. The pipelines decode them.

Splits are by scan everywhere: 'samples' uses the names listed in ``samples.<split>``; 'synthetic' and 'directory'
use the builders' seeded ``split_by_scan`` with ``validation_fraction``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from genesis_jax.data.builders.base import SCAN_ERRORS, DatasetError, discover_volumes, scan_name, scan_seed, \
    split_by_scan
from genesis_jax.data.builders.cube_builders import cube_kwargs
from genesis_jax.data.cubes import extract_cubes
from genesis_jax.data.normalize import normalize_volume, quantize_unit
from genesis_jax.data.readers import Volume, read_volume, resample

log = logging.getLogger(__name__)


class ArraySource:
    """Random access over equally long arrays: element i = {name: array[i]} (a grain data source)."""

    def __init__(self, **arrays: Any):
        lengths = {k: len(v) for k, v in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"ArraySource: arrays differ in length: {lengths}")
        self._arrays = arrays
        self._len = next(iter(lengths.values())) if lengths else 0

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {k: v[index] for k, v in self._arrays.items()}

    def __repr__(self) -> str:
        return f"ArraySource(len={self._len}, keys={sorted(self._arrays)})"


class ListSource(list):
    """Random access over a list of example dicts (volumes of different shapes)."""


class LabelMapped:
    """A volume source whose label maps go through a lookup table (a dataset folder's stored ids -> the classes a
    fine-tuning run trains: :func:`genesis_jax.data.folders.label_table`)."""

    def __init__(self, source: Any, table: np.ndarray):
        self.source, self.table = source, np.asarray(table, np.uint8)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        element = dict(self.source[index])
        element["label"] = self.table[np.asarray(element["label"])]
        return element


def _by_scan(data_config, ids: list[str], split: str) -> list[str]:
    train, val = split_by_scan(ids, float(data_config.validation_fraction), int(data_config.seed))
    if split not in ("train", "validation"):
        raise DatasetError(f"source {data_config.source!r} has splits 'train' and 'validation', not {split!r}")
    return train if split == "train" else val


def split_scans(data_config, split: str) -> list[tuple[str, Any]]:
    """[(scan_id, key)] of a split; ``key`` is what ``_load`` needs (phantom seed, sample name or path)."""
    source = data_config.source
    if source == "synthetic":
        ids = [f"phantom_{i:03d}" for i in range(int(data_config.synthetic.num_scans))]
        return [(sid, int(data_config.seed) * 100_003 + int(sid[-3:])) for sid in _by_scan(data_config, ids, split)]
    if source == "samples":
        names = data_config.samples.get(split)
        if names is None:
            raise DatasetError(f"config.data.samples has no list for split {split!r}")
        return [(name, name) for name in names]
    if source == "directory":
        root = Path(data_config.manual_dir).expanduser()
        paths = {scan_name(p, root): p for p in discover_volumes(root)}
        if not paths:
            raise DatasetError(f"{root}: no volumes found")
        return [(s, paths[s]) for s in _by_scan(data_config, list(paths), split)]
    raise DatasetError(f"config.data.source must be 'synthetic', 'samples' or 'directory', got {source!r}")


def _load(data_config, key: Any, with_label: bool) -> tuple[Volume, np.ndarray | None]:
    """(image volume, target label or None) of one scan, resampled when target_spacing is set: binary for one
    organ, class ids for several (:func:`organs`)."""
    source = data_config.source
    label = None
    if source == "synthetic":
        from genesis_jax.data.phantom import LABELS, phantom_affine, synthetic_ct

        ph = synthetic_ct(tuple(data_config.synthetic.shape), seed=key)
        volume = Volume(ph["image"], ph["spacing"], phantom_affine(ph["spacing"]))
        organ_ids = [{v: k for k, v in LABELS.items()}[o] for o in organs(data_config)] if with_label else None
        label_volume = Volume(ph["label"], ph["spacing"], volume.affine) if with_label else None
    elif source == "samples":
        from genesis_jax.data import samples

        volume = samples.load_sample(key)
        label_volume = samples.load_sample_label(key) if with_label else None
        organ_ids = [samples.class_id(key, o) for o in organs(data_config)] if with_label else None
    else:
        volume = read_volume(key)
        label_volume, organ_ids = None, None
        if with_label:
            raise DatasetError("source='directory' has no labels; use a downstream builder (storage='tfds')")
    spacing = tuple(data_config.get("target_spacing") or ())
    if spacing:
        volume = resample(volume, spacing)
        label_volume = resample(label_volume, spacing) if label_volume is not None else None
    if label_volume is not None:  # class i + 1 is the i-th organ of config.data.organ, 0 everything else
        label = np.zeros(label_volume.array.shape, np.uint8)
        for index, organ_id in enumerate(organ_ids, start=1):
            label[label_volume.array == organ_id] = index
    return volume, label


def organs(data_config) -> list[str]:
    """The organs of ``config.data.organ``: one name ('liver': a binary label) or several, comma-separated
    ('liver,spleen,stomach': a class-id label map, class i + 1 the i-th, for a softmax network)."""
    return [o.strip() for o in str(data_config.organ).split(",") if o.strip()]


def _normalized(data_config, volume: Volume) -> np.ndarray:
    return normalize_volume(volume.array, data_config.modality, hu_min=data_config.hu_min,
                            hu_max=data_config.hu_max, mr_method=data_config.mr_method,
                            mr_percentiles=tuple(data_config.mr_percentiles))


def _guarded_scans(data_config, split: str, with_label: bool) -> Iterator[tuple[str, Volume, np.ndarray | None]]:
    for sid, key in split_scans(data_config, split):
        try:
            volume, label = _load(data_config, key, with_label)
        except SCAN_ERRORS as err:
            if data_config.on_error != "skip":
                raise
            log.warning("skipped %s: %s", sid, err)
            continue
        yield sid, volume, label


def cube_source(data_config, split: str | None = None):
    """Pre-training cubes of ``split`` (default ``data_config.split``): {'cube': uint16 (cx, cy, cz), ...}."""
    split = split or data_config.split
    if data_config.storage == "tfds":
        from genesis_jax.data.builders import open_split

        return open_split(data_config, split)
    if data_config.storage != "memory":
        raise DatasetError(f"config.data.storage must be 'memory' or 'tfds', got {data_config.storage!r}")
    cubes, ids = [], []
    for sid, volume, _ in _guarded_scans(data_config, split, with_label=False):
        try:
            got = extract_cubes(_normalized(data_config, volume), seed=scan_seed(data_config.seed, sid),
                                **cube_kwargs(data_config.cubes.to_dict()))
        except SCAN_ERRORS as err:
            if data_config.on_error != "skip":
                raise
            log.warning("skipped %s: %s", sid, err)
            continue
        cubes.append(quantize_unit(got))
        ids.extend([sid] * len(got))
    if not ids:
        raise DatasetError(f"no cube extracted for split {split!r} of source {data_config.source!r} "
                           f"(all scans skipped or no candidate passed the test)")
    return ArraySource(cube=np.concatenate(cubes), scan_id=np.asarray(ids))


def volume_source(data_config, split: str | None = None):
    """Fine-tuning volumes of ``split``: {'image': uint16-quantised (X, Y, Z), 'label': uint8 (X, Y, Z), ...}
    (in memory also 'affine', the voxel-to-world matrix, so predictions can be written on the scan's grid).

    In memory the label is the binary mask of ``data_config.organ`` (e.g. 'liver'); from TFDS it is the task's, and
    from a dataset folder (builder 'dataset_volumes') the classes ``data_config.label`` picks by name ('' = every
    label) out of ``data_config.labels``.
    """
    split = split or data_config.split
    if data_config.storage == "tfds":
        from genesis_jax.data.builders import open_split

        source = open_split(data_config, split)
        if data_config.builder == "dataset_volumes":
            from genesis_jax.data.folders import label_table

            source = LabelMapped(source, label_table(dict(data_config.labels), data_config.get("label", ""))[0])
        return source
    examples = ListSource()
    for sid, volume, label in _guarded_scans(data_config, split, with_label=True):
        examples.append(dict(image=quantize_unit(_normalized(data_config, volume)), label=label, scan_id=sid,
                             spacing=np.asarray(volume.spacing, np.float32), affine=np.asarray(volume.affine)))
    if not examples:
        raise DatasetError(f"no volume for split {split!r} of source {data_config.source!r}")
    return examples
