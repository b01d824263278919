"""TFDS builders of a user's own dataset folder (:mod:`genesis_jax.data.folders`): its volumes, and cubes cut from them.

  dataset_volumes  every case of the folder once: ``image`` uint16-quantised [0, 1] (the modality's normalisation,
                   resampled when ``target_spacing`` is set), ``label`` the stored label map (uint8 ids, all of them:
                   a fine-tuning run picks its classes when it reads them), ``labelled``, ``scan_id``, ``spacing``,
                   ``affine``. Splits: ``train``/``validation``/``test`` as ``split_cases`` lists them (the split
                   file), ``unlabelled`` for the rest (no label map, or in no split): pre-training only.
  dataset_cubes    Models Genesis cubes from the prepared volumes (no image is read again): ``train`` from every
                   volume but the validation ones, ``validation`` from those. ``volumes`` holds the volume dataset's
                   settings, ``cubes`` the extraction rule (``adapt_margins`` shrinks the margins of a small scan).
"""

from __future__ import annotations

from typing import Iterator

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from genesis_jax.data.builders.base import DatasetError, GenesisBuilder, builder_of, open_prepared, progress
from genesis_jax.data.builders.cube_builders import CubeBuilder
from genesis_jax.data.folders import read_folder
from genesis_jax.data.normalize import dequantize_unit, quantize_unit
from genesis_jax.data.readers import check_same_grid, read_volume, resample

VOLUME_SPLITS = ("train", "validation", "test", "unlabelled")


class DatasetVolumes(GenesisBuilder, skip_registration=True):
    """Every case of a dataset folder (nnU-Net v2 raw or images/ + labels/), with its whole label map."""

    name = "dataset_volumes"

    def _info(self) -> tfds.core.DatasetInfo:
        return self._make_info(dict(
            image=tfds.features.Tensor(shape=(None, None, None), dtype=np.uint16, encoding="bytes"),
            label=tfds.features.Tensor(shape=(None, None, None), dtype=np.uint8, encoding="zlib"),
            labelled=tfds.features.Scalar(dtype=np.int32),
            scan_id=tfds.features.Text(),
            spacing=tfds.features.Tensor(shape=(3,), dtype=np.float32),
            affine=tfds.features.Tensor(shape=(4, 4), dtype=np.float64),
        ), description=self.__doc__ or "")

    def _read(self, case) -> dict:
        channel = int(self.params.get("channel", 0))
        image = self.read_image(case.images[channel])
        if case.label is None:
            label = np.zeros(image.shape, np.uint8)
        else:
            label_volume = read_volume(case.label, kind="label")
            spacing = self.params.get("target_spacing") or ()
            if len(spacing):
                label_volume = resample(label_volume, tuple(spacing))
            check_same_grid(image, label_volume)
            if label_volume.array.max(initial=0) > 255:
                raise DatasetError(f"{case.label}: label ids above 255")
            label = label_volume.array.astype(np.uint8)
        return dict(image=quantize_unit(self.normalized(image)), label=label, labelled=int(case.label is not None),
                    scan_id=case.case_id, spacing=np.asarray(image.spacing, np.float32),
                    affine=np.asarray(image.affine, np.float64))

    def _generate_examples(self, split: str, cases: list) -> Iterator[tuple[str, dict]]:
        def examples():
            for case in progress(cases, f"{self.name} {split} scans"):
                got = self.guarded(str(case.images[int(self.params.get("channel", 0))]), lambda: self._read(case))
                if got is not None:
                    yield case.case_id, got
        return self.count(split, examples())

    def _split_generators(self, dl_manager):
        folder = read_folder(self.manual_root(dl_manager))
        split = {k: list(v) for k, v in dict(self.params["split_cases"]).items()}
        placed = {c for cases in split.values() for c in cases}
        split["unlabelled"] = [c.case_id for c in folder.cases if c.case_id not in placed]
        return {name: self._generate_examples(name, [folder.case(c) for c in split.get(name, [])])
                for name in VOLUME_SPLITS if split.get(name)}


def volumes_config(params: dict) -> ml_collections.ConfigDict:
    """The data block of the volume dataset a cube dataset is cut from."""
    return ml_collections.ConfigDict(dict(params["volumes"]))


class DatasetCubes(CubeBuilder, skip_registration=True):
    """Models Genesis cubes from a prepared ``dataset_volumes`` dataset (labelled or not)."""

    name = "dataset_cubes"

    def _volume_cubes(self, element: dict, sid: str) -> tuple[np.ndarray, np.ndarray]:
        self.report.scans_read += 1
        return self.cubes_of_volume(dequantize_unit(np.asarray(element["image"])), sid, sid)

    def _generate_cubes(self, split: str, sources: list) -> Iterator[tuple[str, dict]]:
        def examples():
            for source in sources:
                for index in progress(list(range(len(source))), f"{self.name} {split} scans"):
                    element = source[index]
                    sid = element["scan_id"].decode() if isinstance(element["scan_id"], bytes) else \
                        str(element["scan_id"])
                    got = self.guarded(sid, lambda: self._volume_cubes(element, sid))
                    for i, (cube, corner) in enumerate(zip(*got)) if got is not None else ():
                        yield f"{sid}#{i:04d}", dict(cube=quantize_unit(cube), scan_id=sid,
                                                     corner=corner.astype(np.int32))
        return self.count(split, examples())

    def _split_generators(self, dl_manager):
        volumes = volumes_config(self.params)
        builder = builder_of(DatasetVolumes, volumes)
        prepared = list(builder.info.splits.keys()) if builder.is_prepared() else []
        parts = {"train": [s for s in ("train", "test", "unlabelled") if s in prepared],
                 "validation": [s for s in ("validation",) if s in prepared]}
        if not prepared:
            raise DatasetError(f"{volumes.manual_dir}: its volumes are not prepared; run `genesis-jax data prepare "
                               f"--dataset={volumes.manual_dir}` first")
        return {split: self._generate_cubes(split, [open_prepared(builder, volumes, s) for s in names])
                for split, names in parts.items() if names}
