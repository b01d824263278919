"""TFDS builders of the Models Genesis target tasks, each from the directory its dataset is distributed as.

None of these datasets can be downloaded here; each builder reads a manual directory in the real layout (the tests
write tiny files in those layouts). Images are stored as uint16-quantised [0, 1] intensities (CT: HU window; MR:
per-patient normalisation), labels as uint8.

  lits_liver         (LCS) LiTS 2017: volume-<i>.nii[.gz] + segmentation-<i>.nii[.gz] anywhere below the manual dir.
                     Split by index as published: 0-99 train, 100-114 validation, 115-129 test. Label: liver = 1;
                     the published task merges the lesion (2) into the background (``lesion_label=0``); set
                     ``lesion_label=1`` to count it as liver. One example per scan (whole volume).
  brats18_flair      (BMS) BraTS 2018: <case>/<case>_flair.nii.gz + <case>_seg.nii.gz (HGG/ and LGG/ below the
                     manual dir). Label: any tumour label = 1. Folds: fold_1.csv, fold_2.csv, fold_3.csv (one case id a
                     line, the published files) when present in the manual dir, else a seeded 3-way split; folds 1+2
                     train with 1/8 of them held out for validation, fold 3 test. One example per case.
  lidc_nodule_crops  (NCS) the published processed LIDC-IDRI crops: x_{train,valid,test}_64x64x32.npy (images in
                     [0, 1]) and m_{...}_64x64x32.npy (masks), shapes (n, 64, 64, 32[, 1]); one example per crop.
  luna16_candidates  (NCC) LUNA16 candidates.csv (or candidates_V2.csv: seriesuid, coordX, coordY, coordZ, class;
                     world mm, ITK/LPS) + subset0 ... subset9/*.mhd; one crop (``crop_shape``, padded with air) per
                     candidate, label = class; split by subset as published (0-4 / 5-6 / 7-9).
"""

from __future__ import annotations

import abc
import csv
from pathlib import Path
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from genesis_jax.data.builders.base import DatasetError, GenesisBuilder, progress, scan_seed
from genesis_jax.data.builders.cube_builders import luna16_scans
from genesis_jax.data.normalize import quantize_unit
from genesis_jax.data.patches import crop_centered
from genesis_jax.data.readers import VolumeError, check_same_grid, read_volume, resample

LITS_INDEX_SPLITS = {"train": (0, 99), "validation": (100, 114), "test": (115, 129)}
_VOLUME_FEATURES = dict(
    image=tfds.features.Tensor(shape=(None, None, None), dtype=np.uint16, encoding="bytes"),
    label=tfds.features.Tensor(shape=(None, None, None), dtype=np.uint8, encoding="zlib"),
    scan_id=tfds.features.Text(),
    spacing=tfds.features.Tensor(shape=(3,), dtype=np.float32),
)


def _strip_nii(name: str) -> str:
    return name[:-7] if name.endswith(".nii.gz") else name[:-4] if name.endswith(".nii") else name


class _VolumeLabelBuilder(GenesisBuilder, skip_registration=True):
    """One example per (image, label) scan pair."""

    def _info(self) -> tfds.core.DatasetInfo:
        return self._make_info(dict(_VOLUME_FEATURES), description=self.__doc__ or "")

    @abc.abstractmethod
    def map_label(self, label: np.ndarray) -> np.ndarray:
        """The task's label (uint8-castable) from the dataset's label map."""

    def _pair(self, image_path: Path, label_path: Path):
        image = self.read_image(image_path)
        label = read_volume(label_path, kind="label")
        spacing = self.params.get("target_spacing") or ()
        if len(spacing):
            label = resample(label, tuple(spacing))
        check_same_grid(image, label)
        return (quantize_unit(self.normalized(image)), self.map_label(label.array).astype(np.uint8),
                np.asarray(image.spacing, np.float32))

    def _generate_examples(self, split: str, pairs: list[tuple[str, Path, Path]]) -> Iterator[tuple[str, dict]]:
        def examples():
            for sid, image_path, label_path in progress(pairs, f"{self.name} {split} scans"):
                got = self.guarded(str(image_path), lambda: self._pair(image_path, label_path))
                if got is not None:
                    image, label, spacing = got
                    yield sid, dict(image=image, label=label, scan_id=sid, spacing=spacing)
        return self.count(split, examples())


class LitsLiver(_VolumeLabelBuilder, skip_registration=True):
    """LiTS 2017 liver segmentation (LCS): whole CT volumes with a binary liver label."""

    name = "lits_liver"
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Unpack LiTS 'Training Batch 1' and 'Training Batch 2' into one directory."

    def map_label(self, label: np.ndarray) -> np.ndarray:
        lesion = int(self.params.get("lesion_label", 0))
        return np.where(label == 1, 1, np.where(label == 2, lesion, 0))

    def _indexed(self, paths) -> dict[int, Path]:
        """{case index: file} of LiTS' ``<kind>-<i>.nii[.gz]`` names; other names (``volume-abc.nii.gz``) are
        skipped and reported, not a crash of the whole build."""
        out = {}
        for path in sorted(paths):
            index = _strip_nii(path.name).split("-", 1)[1]
            if index.isdigit():
                out[int(index)] = path
            else:
                self.report.skipped.append((str(path), f"{path}: not a LiTS <kind>-<number>.nii[.gz] name"))
        return out

    def _split_generators(self, dl_manager):
        root = self.manual_root(dl_manager)
        volumes = self._indexed(self.files_below(root, "volume-*.nii*"))
        segs = self._indexed(self.files_below(root, "segmentation-*.nii*"))
        if not volumes:
            raise DatasetError(f"{root}: no LiTS volume-<i>.nii[.gz] files found")
        for i in sorted(set(volumes) - set(segs)):
            self.skip(str(volumes[i]), f"{volumes[i]}: no segmentation-{i}.nii[.gz] beside it")
        ranges = self.params.get("index_splits") or LITS_INDEX_SPLITS
        splits = {}
        for split, (lo, hi) in ranges.items():
            pairs = [(f"volume-{i}", volumes[i], segs[i]) for i in sorted(volumes) if lo <= i <= hi and i in segs]
            if pairs:
                splits[split] = self._generate_examples(split, pairs)
        if not splits:
            raise DatasetError(f"{root}: no volume/segmentation pair falls in the splits {ranges}")
        return splits


class Brats18Flair(_VolumeLabelBuilder, skip_registration=True):
    """BraTS 2018 FLAIR brain tumour segmentation (BMS): whole MR volumes, all tumour labels = 1."""

    name = "brats18_flair"
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Unpack MICCAI_BraTS_2018_Data_Training (HGG/, LGG/) into one directory."

    def map_label(self, label: np.ndarray) -> np.ndarray:
        return label > 0

    def _folds(self, root: Path, cases: list[str]) -> list[list[str]]:
        csvs = [root / f"fold_{k}.csv" for k in (1, 2, 3)]
        if all(p.exists() for p in csvs):
            folds = [[line.strip() for line in p.read_text().splitlines() if line.strip()] for p in csvs]
            return [[c for c in fold if c in set(cases)] for fold in folds]
        order = np.random.default_rng(int(self.params["seed"])).permutation(len(cases))
        return [sorted(cases[i] for i in order[k::3]) for k in range(3)]

    def _split_generators(self, dl_manager):
        root = self.manual_root(dl_manager)
        pairs = {}
        for flair in self.files_below(root, "*_flair.nii*"):
            case = flair.name[: flair.name.rindex("_flair")]
            segs = sorted(flair.parent.glob(f"{case}_seg.nii*"))
            if not segs:
                self.skip(str(flair), f"{flair}: no {case}_seg.nii[.gz] beside it")
                continue
            pairs[case] = (case, flair, segs[0])
        if not pairs:
            raise DatasetError(f"{root}: no BraTS <case>_flair.nii[.gz] + <case>_seg.nii[.gz] pairs found")
        fold1, fold2, fold3 = self._folds(root, sorted(pairs))
        trainval = sorted(fold1 + fold2)
        order = np.random.default_rng(int(self.params["seed"]) + 4).permutation(len(trainval))
        n_val = max(1, len(trainval) // 8) if len(trainval) >= 2 else 0
        val = sorted(trainval[i] for i in order[:n_val])
        named = {"train": [c for c in trainval if c not in set(val)], "validation": val, "test": fold3}
        return {split: self._generate_examples(split, [pairs[c] for c in cases])
                for split, cases in named.items() if cases}


class LidcNoduleCrops(GenesisBuilder, skip_registration=True):
    """LIDC-IDRI nodule segmentation crops (NCS) from the published processed .npy files."""

    name = "lidc_nodule_crops"
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put x_{train,valid,test}_64x64x32.npy and m_{...}.npy in one directory."
    FILE_SPLITS = {"train": "train", "validation": "valid", "test": "test"}

    def _shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.params.get("crop_shape", (64, 64, 32)))  # type: ignore[return-value]

    def _info(self) -> tfds.core.DatasetInfo:
        shape = self._shape()
        return self._make_info(dict(image=tfds.features.Tensor(shape=shape, dtype=np.uint16),
                                    label=tfds.features.Tensor(shape=shape, dtype=np.uint8),
                                    index=tfds.features.Scalar(dtype=np.int64)),
                               description=self.__doc__ or "")

    def _split_generators(self, dl_manager):
        root = self.manual_root(dl_manager)
        tag = "x".join(str(s) for s in self._shape())
        splits = {}
        for split, file_split in self.FILE_SPLITS.items():
            x, m = root / f"x_{file_split}_{tag}.npy", root / f"m_{file_split}_{tag}.npy"
            if x.exists() or m.exists():
                splits[split] = self._generate_examples(split, x, m)
        if not splits:
            raise DatasetError(f"{root}: no x_<train|valid|test>_{tag}.npy files found")
        return splits

    def _arrays(self, x_path: Path, m_path: Path) -> tuple[np.ndarray, np.ndarray]:
        for p in (x_path, m_path):
            if not p.exists():
                raise DatasetError(f"{p}: missing (images and masks come in x_/m_ pairs)")
        try:
            x, m = np.load(x_path, mmap_mode="r"), np.load(m_path, mmap_mode="r")  # never the whole file in RAM
        except ValueError as err:
            raise VolumeError(f"{x_path.parent}: cannot read the .npy pair ({err}); truncated?") from None
        shape = self._shape()
        for p, a in ((x_path, x), (m_path, m)):
            core = a.shape[1:4] if a.ndim >= 4 else a.shape[1:]
            if tuple(core) != shape or (a.ndim == 5 and a.shape[4] != 1) or a.ndim not in (4, 5):
                raise VolumeError(f"{p}: expected shape (n, {', '.join(map(str, shape))}[, 1]), got {a.shape}")
        if len(x) != len(m):
            raise VolumeError(f"{m_path}: {len(m)} masks for {len(x)} images in {x_path}")
        return x, m

    def _crop(self, x: np.ndarray, m: np.ndarray, i: int, x_path: Path) -> tuple[np.ndarray, np.ndarray]:
        image = np.asarray(x[i], dtype=np.float32).reshape(self._shape())
        if not np.all(np.isfinite(image)):
            raise VolumeError(f"{x_path}[{i}]: NaN or Inf voxels")
        if image.min() < -1e-3 or image.max() > 1 + 1e-3:
            raise VolumeError(f"{x_path}[{i}]: values in [{image.min():.3g}, {image.max():.3g}], expected [0, 1]")
        return quantize_unit(image), (np.asarray(m[i]).reshape(self._shape()) > 0.5).astype(np.uint8)

    def _generate_examples(self, split: str, x_path: Path, m_path: Path) -> Iterator[tuple[str, dict]]:
        def examples():
            arrays = self.guarded(str(x_path), lambda: self._arrays(x_path, m_path))
            if arrays is None:
                return
            x, m = arrays
            self.report.scans_read += 1
            for i in range(len(x)):
                got = self.guarded(f"{x_path}[{i}]", lambda: self._crop(x, m, i, x_path))
                if got is not None:
                    yield f"{split}#{i:06d}", dict(image=got[0], label=got[1], index=i)
        return self.count(split, examples())


class Luna16Candidates(GenesisBuilder, skip_registration=True):
    """LUNA16 false-positive reduction candidates (NCC): one crop per candidate, label = class."""

    name = "luna16_candidates"
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Put LUNA16's candidates.csv (or candidates_V2.csv) and subset0/ ... subset9/ "
                                    "(*.mhd + *.raw) in one directory.")

    def _shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.params.get("crop_shape", (64, 64, 32)))  # type: ignore[return-value]

    def _info(self) -> tfds.core.DatasetInfo:
        return self._make_info(dict(image=tfds.features.Tensor(shape=self._shape(), dtype=np.uint16),
                                    label=tfds.features.Scalar(dtype=np.int64),
                                    scan_id=tfds.features.Text(),
                                    candidate=tfds.features.Scalar(dtype=np.int64),
                                    world_lps=tfds.features.Tensor(shape=(3,), dtype=np.float32)),
                               description=self.__doc__ or "")

    def _read_candidates(self, root: Path) -> dict[str, list[tuple[int, np.ndarray, int]]]:
        path = next((root / n for n in ("candidates_V2.csv", "candidates.csv") if (root / n).exists()), None)
        if path is None:
            raise DatasetError(f"{root}: no candidates.csv or candidates_V2.csv")
        by_scan: dict[str, list[tuple[int, np.ndarray, int]]] = {}
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = {"seriesuid", "coordX", "coordY", "coordZ", "class"} - set(reader.fieldnames or ())
            if missing:
                raise DatasetError(f"{path}: missing column(s) {sorted(missing)}")
            for row_number, row in enumerate(reader):
                try:
                    xyz = np.array([float(row["coordX"]), float(row["coordY"]), float(row["coordZ"])])
                    cls = int(row["class"])
                except ValueError:
                    raise DatasetError(f"{path}: line {row_number + 2} is not numeric: {row}") from None
                by_scan.setdefault(row["seriesuid"], []).append((row_number, xyz, cls))
        return by_scan

    def _select(self, sid: str, candidates: list) -> list:
        limit = self.params.get("max_negatives_per_scan")
        negatives = [c for c in candidates if c[2] == 0]
        if not limit or len(negatives) <= limit:
            return candidates
        rng = np.random.default_rng(scan_seed(int(self.params["seed"]), sid))
        keep = {negatives[i][0] for i in rng.choice(len(negatives), int(limit), replace=False)}
        return [c for c in candidates if c[2] != 0 or c[0] in keep]

    def _crops(self, path: Path, candidates: list):
        volume = self.read_image(path)
        image01 = self.normalized(volume, "ct")
        inverse = np.linalg.inv(volume.affine)
        out = []
        for row, world_lps, cls in candidates:
            ras = np.array([-world_lps[0], -world_lps[1], world_lps[2], 1.0])
            centre = np.rint((inverse @ ras)[:3]).astype(np.int64)
            crop = crop_centered(image01, centre, self._shape(), pad_value=0.0)  # 0 = -1000 HU (air)
            out.append((row, quantize_unit(crop), cls, world_lps))
        return out

    def _generate_examples(self, split: str, scans: list) -> Iterator[tuple[str, dict]]:
        def examples():
            for sid, path, candidates in progress(scans, f"{self.name} {split} scans"):
                got = self.guarded(str(path), lambda: self._crops(path, self._select(sid, candidates)))
                for row, crop, cls, world in got or ():
                    yield f"{sid}#{row}", dict(image=crop, label=cls, scan_id=sid, candidate=row,
                                               world_lps=world.astype(np.float32))
        return self.count(split, examples())

    def _split_generators(self, dl_manager):
        root = self.manual_root(dl_manager)
        by_scan = self._read_candidates(root)
        splits = {}
        for split, scans in luna16_scans(root, self.params.get("subsets")).items():
            with_candidates = [(p.stem, p, by_scan[p.stem]) for _, p in scans if p.stem in by_scan]
            if with_candidates:
                splits[split] = self._generate_examples(split, with_candidates)
        if not splits:
            raise DatasetError(f"{root}: no subset*/ .mhd scan has candidates in the csv")
        return splits
