"""TFDS builders of Genesis pre-training cubes: any directory of volumes, and LUNA16 with its published split.

Each example is one cube: ``cube`` uint16 (cx, cy, cz) = round(v * 65535) of the [0, 1] normalised intensities
(see genesis_jax.data.normalize for the precision), ``scan_id`` and the cube's ``corner`` in the canonical volume.
Splits are BY SCAN: every cube of a scan lands in the same split.

  genesis_cubes  the volumes below the manual dir, split train/validation by a seeded draw of scans
                 (``validation_fraction``, ``seed``), or ``split_inputs`` = {split: [[scan_id, path], ...]} as given.
  luna16_cubes   manual dir with LUNA16's subset0 ... subset9 folders of .mhd/.raw; the published split:
                 subsets 0-4 train, 5-6 validation, 7-9 test (``subsets`` overrides it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from genesis_jax.data.builders.base import DatasetError, GenesisBuilder, discover_volumes, progress, scan_name, \
    scan_seed, split_by_scan
from genesis_jax.data.cubes import CubeExtractionError, extract_cubes
from genesis_jax.data.normalize import quantize_unit

LUNA16_SUBSETS = {"train": (0, 1, 2, 3, 4), "validation": (5, 6), "test": (7, 8, 9)}


def luna16_scans(root: Path, subsets: dict | None) -> dict[str, list[tuple[int, Path]]]:
    """{split: [(subset number, .mhd path), ...]} of LUNA16's subset<k>/ folders (published split by default)."""
    subsets = {k: tuple(v) for k, v in (subsets or LUNA16_SUBSETS).items()}
    return {split: [(k, p) for k in numbers for p in sorted((root / f"subset{k}").rglob("*.mhd"))]
            for split, numbers in subsets.items()}


def cube_kwargs(cube_params: dict) -> dict:
    """extract_cubes keyword arguments from a config's ``cubes`` block."""
    kw = dict(cube_params)
    for key in ("cube_shape", "margins"):
        kw[key] = tuple(int(v) for v in kw[key])
    return kw


def cube_rule_hint(rule: dict) -> str:
    """What to change when a scan is smaller than the cube plus its margins."""
    if rule.get("adapt_margins"):
        return ("the scan is smaller than config.data.cubes.cube_shape itself: use a smaller cube (and the same "
                "config.input_shape), e.g. a :tiny preset (16x16x8), or a coarser config.data.target_spacing")
    fix = ("config.data.cubes.adapt_margins=True (margins shrink to fit each scan) or smaller "
           "config.data.cubes.margins" if "adapt_margins" in rule else "smaller config.data.cubes.margins")
    return f"set {fix}; the preset data/genesis_cubes:samples (margins 16/16/8) fits clinical scans"


def criterion_hint(rule: dict) -> str:
    """What to change when no candidate cube passes the acceptance test."""
    if rule.get("criterion", "tissue") == "tissue":
        return ("the published tissue test keeps air-rich (chest) cubes; for abdomen, MR or other anatomy set "
                "config.data.cubes.criterion=foreground (as data/genesis_cubes:samples does)")
    return "lower config.data.cubes.min_foreground_fraction or config.data.cubes.foreground_threshold"


class CubeBuilder(GenesisBuilder, skip_registration=True):
    """Cube datasets: the features, and the cubes of one normalised volume under ``params['cubes']``."""

    def _info(self) -> tfds.core.DatasetInfo:
        shape = tuple(int(v) for v in self.params["cubes"]["cube_shape"])
        return self._make_info(
            dict(cube=tfds.features.Tensor(shape=shape, dtype=np.uint16),
                 scan_id=tfds.features.Text(),
                 corner=tfds.features.Tensor(shape=(3,), dtype=np.int32)),
            description=f"Models Genesis sub-volumes {shape}, uint16-quantised [0, 1] intensities, split by scan.")

    def cubes_of_volume(self, volume01: np.ndarray, sid: str, where: str) -> tuple[np.ndarray, np.ndarray]:
        """(cubes, corners) of a [0, 1] volume; a volume too small for the rule, or giving no cube, raises
        CubeExtractionError naming ``where`` and the field to change."""
        rule = self.params["cubes"]
        try:
            cubes, corners = extract_cubes(volume01, seed=scan_seed(self.params["seed"], sid), return_corners=True,
                                           **cube_kwargs(rule))
        except CubeExtractionError as err:
            raise CubeExtractionError(f"{where}: {err}; {cube_rule_hint(rule)}") from None
        if len(cubes) == 0:
            raise CubeExtractionError(f"{where}: no candidate passed the {rule['criterion']} test in "
                                      f"{rule['max_attempts']} attempts; {criterion_hint(rule)}")
        return cubes, corners

    def _cubes_of(self, path: Path, sid: str) -> tuple[np.ndarray, np.ndarray]:
        return self.cubes_of_volume(self.normalized(self.read_image(path)), sid, str(path))

    def _generate_examples(self, split: str, scans: list[tuple[str, Path]]) -> Iterator[tuple[str, dict]]:
        def examples():
            for sid, path in progress(scans, f"{self.name} {split} scans"):
                got = self.guarded(str(path), lambda: self._cubes_of(path, sid))
                if got is None:
                    continue
                for i, (cube, corner) in enumerate(zip(*got)):
                    yield f"{sid}#{i:04d}", dict(cube=quantize_unit(cube), scan_id=sid,
                                                 corner=corner.astype(np.int32))
        return self.count(split, examples())


class GenesisCubes(CubeBuilder, skip_registration=True):
    """Cubes from any set of volumes (NIfTI, MetaImage, DICOM series), split train/validation by scan."""

    name = "genesis_cubes"

    def _scans(self, dl_manager) -> list[tuple[str, Path]]:
        root = self.manual_root(dl_manager)
        scans = [(scan_name(path, root), path) for path in discover_volumes(root, self.unlistable)]
        if not scans:
            raise DatasetError(f"{root}: no volumes (.nii, .nii.gz, .mhd, .mha or DICOM series) found")
        return scans

    def _split_generators(self, dl_manager):
        explicit = self.params.get("split_inputs")
        if explicit:  # {split: [[scan_id, path], ...]}: splits decided by the caller (samples, phantoms)
            return {split: self._generate_examples(split, [(sid, Path(p)) for sid, p in pairs])
                    for split, pairs in explicit.items() if pairs}
        scans = dict(self._scans(dl_manager))
        train, val = split_by_scan(list(scans), float(self.params.get("validation_fraction", 0.0)),
                                   int(self.params["seed"]))
        splits = {"train": self._generate_examples("train", [(s, scans[s]) for s in train])}
        if val:
            splits["validation"] = self._generate_examples("validation", [(s, scans[s]) for s in val])
        return splits


class Luna16Cubes(CubeBuilder, skip_registration=True):
    """LUNA16 cubes with the published subset split (subset0-4 train, 5-6 validation, 7-9 test)."""

    name = "luna16_cubes"
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Download LUNA16 subset0.zip ... subset9.zip, unzip them into one directory "
                                    "(subset0/ ... subset9/ holding *.mhd + *.raw) and set config.data.manual_dir.")

    def _split_generators(self, dl_manager):
        root = self.manual_root(dl_manager)
        splits = {split: self._generate_examples(split, [(f"subset{k}/{p.stem}", p) for k, p in scans])
                  for split, scans in luna16_scans(root, self.params.get("subsets")).items() if scans}
        if not splits:
            raise DatasetError(f"{root}: no subset*/ folders with .mhd files (expected LUNA16's subset0 ... subset9)")
        return splits
