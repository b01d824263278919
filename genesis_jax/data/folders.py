"""A user's own dataset folder: nnU-Net v2's raw layout or a plain images/ + labels/ folder, its split file and the
record of how it was prepared.

Layouts read (``read_folder``):
  nnU-Net v2 raw  ``dataset.json`` (``channel_names``, ``labels``, ``numTraining``, ``file_ending``), ``imagesTr/``
                  (``<case>_<XXXX><file_ending>``, one file per channel), ``labelsTr/`` (``<case><file_ending>``),
                  ``imagesTs/`` (unlabelled, or labelled when a ``labelsTs/`` is present).
  plain           ``images/`` and ``labels/`` with the same names (an image may carry the ``_0000`` suffix);
                  a ``dataset.json`` beside them is read when present, else the label names are ``label_<id>``
                  for every id found in the label maps.
Formats: NIfTI (.nii.gz, .nii), MetaImage (.mha, .mhd) and NRRD (.nrrd); a file ending without a reader here
(.nhdr, .tif) is refused by name.

Labels (``label_table``): ``labels`` maps a name to an id, or to a list of ids (an nnU-Net region, e.g. "whole
tumour": [1, 2, 3]). A fine-tuning run picks its classes by name: one name (``--label=liver``) trains a binary
(sigmoid) network on that label or region; several (``liver,tumour``) or none (every label) a softmax network with
background. The table maps the stored ids to the network's classes (0 = background, then 1..K in the order given,
or by id).

Split file (``splits.json``, written once by ``genesis-jax data prepare --dataset=DIR``, edited by the user and
honoured on every rerun): ``{"train": [case, ...], "validation": [...], "test": [...]}``; nnU-Net's
``splits_final.json`` form (a list of folds with ``train``/``val``) is also read (fold 0). Test cases are the
labelled ``imagesTs/`` ones; unlabelled images (``imagesTs/`` without ``labelsTs/``) feed pre-training only.

Record (``prepared.json``): the data settings ``data prepare`` used (the whole ``config.data`` block, with the
modality read from ``channel_names`` and the labels from ``dataset.json``), so ``pretrain``, ``finetune``,
``evaluate``, ``predict`` and ``al`` given ``--dataset=DIR`` (or its name) read the data exactly as prepared.
Both files live in ``<data_dir>/datasets/<name>/`` (nnU-Net keeps its split beside the preprocessed data, too).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from genesis_jax.data.builders.base import DatasetError, resolve_data_dir, split_by_scan

READABLE_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")
UNREADABLE_ENDINGS = (".nhdr", ".tif", ".tiff", ".png")
SPLIT_FILE = "splits.json"
RECORD_FILE = "prepared.json"
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclasses.dataclass
class Case:
    """One case: its channel files (channel index -> path), its label map (or None) and where it came from."""

    case_id: str
    images: dict[int, Path]
    label: Path | None
    part: str  # 'Tr' (training folder) or 'Ts' (test folder)


@dataclasses.dataclass
class DatasetFolder:
    root: Path
    name: str
    layout: str  # 'nnunet' or 'plain'
    labels: dict[str, Any]  # name -> id or [ids] (background included)
    channel_names: dict[int, str]
    file_ending: str
    cases: list[Case]
    num_training: int | None = None

    def case(self, case_id: str) -> Case:
        for case in self.cases:
            if case.case_id == case_id:
                return case
        raise DatasetError(f"{self.root}: no case {case_id!r}")

    @property
    def labelled(self) -> list[str]:
        return [c.case_id for c in self.cases if c.label is not None]

    def modality(self, channel: int = 0) -> str:
        """'ct' when the channel is named CT (nnU-Net's CT normalisation), else 'mr' (per-volume normalisation)."""
        return "ct" if self.channel_names.get(channel, "CT").strip().lower() == "ct" else "mr"


def dataset_name(root: str | Path) -> str:
    """The name a folder is prepared and looked up under: its base name, made safe for a directory name."""
    return _NAME.sub("_", Path(root).expanduser().resolve().name) or "dataset"


def _ending_of(name: str) -> str | None:
    lower = name.lower()
    return next((e for e in READABLE_ENDINGS + UNREADABLE_ENDINGS if lower.endswith(e)), None)


def _check_ending(ending: str, where: Path) -> str:
    if ending.lower() in UNREADABLE_ENDINGS:
        raise DatasetError(f"{where}: file_ending {ending!r} has no reader in genesis_jax (it reads "
                           f"{', '.join(READABLE_ENDINGS)}); convert the files, e.g. to .nii.gz")
    if ending.lower() not in READABLE_ENDINGS:
        raise DatasetError(f"{where}: file_ending {ending!r} is not one of {', '.join(READABLE_ENDINGS)}")
    return ending


def _read_dataset_json(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: cannot read as JSON ({err})") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    for key in ("channel_names", "labels", "file_ending"):
        if key not in meta:
            raise DatasetError(f"{path}: missing field {key!r} (nnU-Net v2's dataset.json has channel_names, labels, "
                               "numTraining, file_ending)")
    return meta


def _labels_of(meta: dict[str, Any], path: Path) -> dict[str, Any]:
    labels = meta["labels"]
    if not isinstance(labels, dict) or not labels:
        raise DatasetError(f"{path}: labels must be an object of name -> id, e.g. {{\"background\": 0, \"liver\": 1}}")
    out: dict[str, Any] = {}
    for name, value in labels.items():
        ids = value if isinstance(value, list) else [value]
        if not ids or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 256 for i in ids):
            raise DatasetError(f"{path}: labels.{name} = {value!r}: an id is an integer in [0, 255] (or a list of "
                               "them for a region)")
        out[str(name)] = value
    if 0 not in out.values():
        raise DatasetError(f"{path}: labels has no background (an entry with id 0)")
    return out


def _channels_of(meta: dict[str, Any], path: Path) -> dict[int, str]:
    try:
        return {int(k): str(v) for k, v in dict(meta["channel_names"]).items()}
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: channel_names must map channel numbers to names, e.g. {{\"0\": \"CT\"}}") from None


def _images_by_case(folder: Path, ending: str, channels: Sequence[int], part: str) -> dict[str, dict[int, Path]]:
    """{case: {channel: path}} of ``<case>_<XXXX><ending>`` files; a file without the channel suffix is channel 0."""
    out: dict[str, dict[int, Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.name.lower().endswith(ending.lower()):
            if path.is_file() and _ending_of(path.name) in UNREADABLE_ENDINGS:
                _check_ending(_ending_of(path.name) or "", path)
            continue
        stem = path.name[: -len(ending)]
        match = _CHANNEL.match(stem)
        case, channel = (match["case"], int(match["channel"])) if match else (stem, 0)
        out.setdefault(case, {})[channel] = path
    for case, files in out.items():
        missing = [c for c in channels if c not in files]
        if missing:
            raise DatasetError(f"{folder}: case {case!r} lacks channel file(s) "
                               f"{', '.join(f'{case}_{c:04d}{ending}' for c in missing)}")
    return out


def _guess_ending(folder: Path) -> str:
    endings = sorted({e for p in folder.iterdir() if p.is_file() and (e := _ending_of(p.name))})
    if not endings:
        raise DatasetError(f"{folder}: no image files ({', '.join(READABLE_ENDINGS)})")
    if len(endings) > 1:
        raise DatasetError(f"{folder}: files of several formats ({', '.join(endings)}); keep one, or name it in a "
                           "dataset.json file_ending")
    return _check_ending(endings[0], folder)


def _cases(images_dir: Path, labels_dir: Path | None, ending: str, channels: Sequence[int], part: str) -> list[Case]:
    images = _images_by_case(images_dir, ending, channels, part)
    labels = {}
    if labels_dir is not None and labels_dir.is_dir():
        labels = {p.name[: -len(ending)]: p for p in sorted(labels_dir.iterdir())
                  if p.name.lower().endswith(ending.lower()) and not p.name.startswith(".")}
        orphans = sorted(set(labels) - set(images))
        if orphans:
            raise DatasetError(f"{labels_dir / (orphans[0] + ending)}: a label map without an image in {images_dir}")
    return [Case(case, files, labels.get(case), part) for case, files in sorted(images.items())]


def read_folder(root: str | Path) -> DatasetFolder:
    """Read a dataset folder (nnU-Net v2 raw, or plain images/ + labels/); errors name the file or field."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder does not exist")
    meta_path = root / "dataset.json"
    meta = _read_dataset_json(meta_path) if meta_path.is_file() else None
    if (root / "imagesTr").is_dir():
        if meta is None:
            raise DatasetError(f"{meta_path}: missing (an nnU-Net v2 raw dataset has a dataset.json beside imagesTr/)")
        layout, images_tr, labels_tr = "nnunet", root / "imagesTr", root / "labelsTr"
        images_ts, labels_ts = root / "imagesTs", root / "labelsTs"
    elif (root / "images").is_dir():
        layout, images_tr, labels_tr = "plain", root / "images", root / "labels"
        images_ts, labels_ts = root / "imagesTs", root / "labelsTs"
    else:
        raise DatasetError(f"{root}: neither an nnU-Net raw dataset (dataset.json, imagesTr/, labelsTr/) nor a plain "
                           "folder (images/, labels/)")
    channels = _channels_of(meta, meta_path) if meta else {0: "CT"}
    ending = _check_ending(str(meta["file_ending"]), meta_path) if meta else _guess_ending(images_tr)
    cases = _cases(images_tr, labels_tr, ending, sorted(channels), "Tr")
    if images_ts.is_dir():
        cases += _cases(images_ts, labels_ts, ending, sorted(channels), "Ts")
    if not cases:
        raise DatasetError(f"{images_tr}: no <case>_0000{ending} images")
    seen: dict[str, str] = {}
    for case in cases:
        if case.case_id in seen:
            raise DatasetError(f"{root}: case {case.case_id!r} is in both images{seen[case.case_id]} and "
                               f"images{case.part}")
        seen[case.case_id] = case.part
    labels = _labels_of(meta, meta_path) if meta else _inferred_labels([c.label for c in cases if c.label])
    num_training = int(meta["numTraining"]) if meta and "numTraining" in meta else None
    return DatasetFolder(root, dataset_name(root), layout, labels, channels, ending, cases, num_training)


def _inferred_labels(paths: Sequence[Path]) -> dict[str, Any]:
    """``label_<id>`` for every id in the label maps (a plain folder without dataset.json)."""
    from genesis_jax.data.readers import read_volume

    ids: set[int] = set()
    for path in paths:
        ids |= {int(i) for i in np.unique(read_volume(path, kind="label", canonical=False).array)}
    return {"background": 0, **{f"label_{i}": i for i in sorted(ids - {0})}}


# --- labels chosen by name --------------------------------------------------------------------------------------------
def _ids(value: Any) -> list[int]:
    return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def label_table(labels: dict[str, Any], selection: str = "") -> tuple[np.ndarray, dict[str, int]]:
    """(lookup table uint8[256]: stored id -> network class, {name: network class}) for a label selection.

    ``selection``: '' every label (plain ids; softmax), one name (binary, a region allowed) or comma-separated names
    (softmax over background and these). Unknown names raise, listing the dataset's labels.
    """
    names = [n.strip() for n in selection.split(",") if n.strip()] if selection else []
    background = [n for n, v in labels.items() if _ids(v) == [0]]
    known = [n for n in labels if n not in background]
    for name in names:
        if name not in labels or name in background:
            raise DatasetError(f"--label={selection}: no label {name!r} in this dataset; it has "
                               f"{', '.join(known) or 'none'}")
    if not names:
        names = sorted((n for n in known if not isinstance(labels[n], (list, tuple))), key=lambda n: labels[n])
        if not names:
            raise DatasetError("the dataset's labels are all regions (lists of ids); pick one with --label=NAME")
    elif len(names) > 1:
        regions = [n for n in names if isinstance(labels[n], (list, tuple)) and len(_ids(labels[n])) > 1]
        if regions:
            raise DatasetError(f"--label={selection}: {regions[0]!r} is a region (overlapping ids); a region is "
                               "trained alone (binary): --label=" + regions[0])
    table = np.zeros(256, np.uint8)
    for index, name in enumerate(names, start=1):
        table[_ids(labels[name])] = index
    return table, {background[0] if background else "background": 0, **{n: i for i, n in enumerate(names, start=1)}}


# --- the split file -------------------------------------------------------------------------------------------------
def read_split_file(path: Path, folder: DatasetFolder) -> dict[str, list[str]]:
    """The user's split (ours, or nnU-Net's splits_final.json form: fold 0), checked against the folder's cases."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: cannot read the split file ({err}); fix it or delete it to draw a new one") \
            from None
    if isinstance(raw, list):  # nnU-Net: [{"train": [...], "val": [...]}, ...]
        raw = {"train": raw[0].get("train", []), "validation": raw[0].get("val", [])} if raw else {}
    if not isinstance(raw, dict) or not isinstance(raw.get("train"), list):
        raise DatasetError(f"{path}: expected {{\"train\": [case, ...], \"validation\": [...], \"test\": [...]}}")
    labelled = set(folder.labelled)
    split: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for part in ("train", "validation", "test"):
        cases = [str(c) for c in raw.get(part, [])]
        for case in cases:
            if case not in labelled:
                raise DatasetError(f"{path}: {part} lists {case!r}, which is not a labelled case of {folder.root}")
            if case in owner:
                raise DatasetError(f"{path}: {case!r} is in both {owner[case]} and {part}")
            owner[case] = part
        split[part] = sorted(cases)
    return split


def draw_split(folder: DatasetFolder, validation_fraction: float, seed: int) -> dict[str, list[str]]:
    """Labelled training cases split by case (seeded), labelled test-folder cases as test."""
    train_cases = [c.case_id for c in folder.cases if c.label is not None and c.part == "Tr"]
    train, val = split_by_scan(train_cases, validation_fraction, seed)
    test = [c.case_id for c in folder.cases if c.label is not None and c.part == "Ts"]
    return {"train": train, "validation": val, "test": sorted(test)}


def unlabelled_cases(folder: DatasetFolder, split: dict[str, list[str]]) -> list[str]:
    """Cases that only pre-training uses: no label map, or labelled but listed in no split."""
    placed = {c for cases in split.values() for c in cases}
    return [c.case_id for c in folder.cases if c.case_id not in placed]


# --- the record of a prepared folder ------------------------------------------------------------------------------
def record_dir(data_dir: str, name: str) -> Path:
    """Where a prepared folder's split file and record live: <data_dir>/datasets/<name>."""
    return resolve_data_dir(data_dir) / "datasets" / name


def write_record(directory: Path, record: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / RECORD_FILE
    tmp = path.with_name(f".{RECORD_FILE}.tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    tmp.replace(path)
    return path


def load_record(spec: str, data_dir: str = "") -> dict[str, Any]:
    """The record of a prepared dataset given its folder or its name; errors say to run ``data prepare``."""
    folder = Path(spec).expanduser()
    name = dataset_name(folder) if folder.is_dir() else spec
    path = record_dir(data_dir, name) / RECORD_FILE
    if not path.is_file():
        what = f"{folder.resolve()}" if folder.is_dir() else f"no folder {spec!r} and no dataset named {spec!r}"
        raise DatasetError(f"{what}: not prepared ({path} missing); run `genesis-jax data prepare --dataset={spec}` "
                           "first")
    record = json.loads(path.read_text())
    if folder.is_dir() and Path(record["folder"]) != folder.resolve():
        raise DatasetError(f"{folder.resolve()}: the prepared dataset {name!r} was made from another folder "
                           f"({record['folder']}); prepare this one under another name: --config.data.name=NAME")
    return record
