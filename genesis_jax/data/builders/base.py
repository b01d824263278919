"""What every genesis_jax TFDS builder shares: its config, scan discovery, splitting by scan, skip policy, report.

Builders here are ``tfds.core.GeneratorBasedBuilder`` subclasses writing ArrayRecord; TensorFlow is not needed to
write or read them (tensorflow-datasets' no-TF path). They are not registered in TFDS' global registry
(``skip_registration``): ``genesis_jax.data.builders.make_builder`` builds them from a data config and opens the
prepared data with ``as_data_source``.

All settings of a build travel in ``GenesisDataConfig.params`` (a JSON-able dict made from ``config.data``), are
recorded in the dataset's metadata, and are compared with the config when the dataset is opened, so a prepared
dataset is never silently read under other settings.

Bad scans: with ``on_error='skip'`` a scan that cannot be used (unreadable, 2D/4D, NaN/Inf, too small, label grid
mismatch, no cube found) is logged and listed in the report with its reason; with ``on_error='raise'`` the build
stops with the error naming the file. TFDS writes into an ``incomplete.*`` directory and renames it only at the
end, so a failed build never leaves a finished-looking dataset.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import json
import logging
import os
import sys
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import tensorflow_datasets as tfds

from genesis_jax.data.cubes import CubeExtractionError
from genesis_jax.data.dicom import is_dicom_file
from genesis_jax.data.normalize import normalize_volume
from genesis_jax.data.readers import Volume, VolumeError, is_volume_file, read_volume, resample

log = logging.getLogger(__name__)

# Errors that make one scan unusable (skipped or raised per on_error); anything else is a bug and always raises.
SCAN_ERRORS = (VolumeError, CubeExtractionError, OSError)
# Settings that do not change the written data (excluded from the metadata comparison).
# ``label`` is the classes a fine-tuning run reads from a dataset folder's whole label maps; ``labels`` their names.
NON_DATA_PARAMS = frozenset({"data_dir", "on_error", "overwrite", "split", "storage", "memory_buffer_mb",
                             "split_inputs", "label", "labels"})


class DatasetError(ValueError):
    """A dataset that cannot be built or opened as configured; the message says why and what to do."""


@dataclasses.dataclass(eq=False)
class GenesisDataConfig(tfds.core.BuilderConfig):
    params: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class PrepareReport:
    """What a build read, skipped (with reasons) and wrote."""

    scans_read: int = 0
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    examples: dict[str, int] = dataclasses.field(default_factory=dict)
    split_scans: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # split -> scan ids written

    def to_json(self) -> dict:
        return dict(scans_read=self.scans_read, skipped=[list(s) for s in self.skipped], examples=self.examples,
                    split_scans=self.split_scans)

    def empty_splits(self) -> list[str]:
        """Splits a build started that got no example."""
        return [s for s in self.split_scans if not self.examples.get(s)]


def resolve_data_dir(data_dir: str) -> Path:
    """``data_dir``, or <cache>/tensorflow_datasets when empty."""
    from genesis_jax.data.samples import cache_root

    return Path(data_dir).expanduser() if data_dir else cache_root() / "tensorflow_datasets"


def data_params(params: dict) -> dict:
    return {k: v for k, v in params.items() if k not in NON_DATA_PARAMS}


def progress(items: list, desc: str):
    """A tqdm bar over scans (TFDS' own bars count examples, not scans)."""
    from tqdm.auto import tqdm

    # disable=None: no bar when stderr is not a terminal (a log file, a test), where it is only noise
    return tqdm(items, desc=desc, unit="scan", leave=False, mininterval=1.0, disable=None)


@contextlib.contextmanager
def terminal_progress() -> Iterator[None]:
    """TFDS' own progress bars only while stderr is a terminal (they would bury the one-line errors of a log);
    TFDS' previous setting is restored on exit."""
    from tensorflow_datasets.core.utils import tqdm_utils

    previous = tqdm_utils._active
    tqdm_utils.display_progress_bar(previous and sys.stderr.isatty())
    try:
        yield
    finally:
        tqdm_utils.display_progress_bar(previous)


def scan_seed(seed: int, scan_id: str) -> int:
    """A per-scan seed: stable across runs and machines, independent of the order scans are read in."""
    return int(np.random.SeedSequence([int(seed), zlib.crc32(scan_id.encode())]).generate_state(1)[0])


def discover_volumes(root: str | os.PathLike,
                     on_unlistable: Callable[[Path, OSError], None] | None = None) -> list[Path]:
    """Volume files and DICOM series directories under ``root`` (recursive), sorted. A folder that cannot be listed
    (permissions) goes to ``on_unlistable(folder, error)``; without it, it raises DatasetError naming the folder
    (never a silent gap in the input)."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DatasetError(f"{root}: input directory does not exist")

    def unlistable(err: OSError) -> None:
        folder = Path(err.filename or root)
        if on_unlistable is None:
            raise DatasetError(f"{folder}: cannot list the folder ({err.strerror or err}); its scans would be "
                               "missed") from None
        on_unlistable(folder, err)

    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=unlistable):
        dirnames.sort()
        files = sorted(filenames)
        volumes = [Path(dirpath) / f for f in files if is_volume_file(f)]
        found.extend(volumes)
        # any file, not only the first few: a series whose first files are damaged (or not DICOM) is still found
        if not volumes and files and any(is_dicom_file(Path(dirpath) / f) for f in files):
            found.append(Path(dirpath))
    return sorted(found)


def scan_name(path: Path, root: Path | None) -> str:
    rel = path.relative_to(root) if root is not None and root in path.parents else Path(path.name)
    name = rel.as_posix()
    for suffix in (".nii.gz", ".nii", ".mhd", ".mha", ".img"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def split_by_scan(ids: list[str], validation_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded split of scan ids into (train, validation); at least one of each when there are >= 2 scans."""
    ids = sorted(ids)
    if not 0.0 <= validation_fraction < 1.0:
        raise DatasetError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    n_val = int(round(validation_fraction * len(ids)))
    if validation_fraction > 0 and len(ids) >= 2:
        n_val = min(max(n_val, 1), len(ids) - 1)
    order = np.random.default_rng(seed).permutation(len(ids))
    val = sorted(ids[i] for i in order[:n_val])
    return [i for i in ids if i not in set(val)], val


class GenesisBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the genesis_jax builders: params access, reading with the skip policy, the report, metadata."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Set config.data.manual_dir to the directory that holds the dataset."

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.report = PrepareReport()

    @property
    def params(self) -> dict:
        return self.builder_config.params  # type: ignore[attr-defined]

    # TFDS prints "Downloading and preparing dataset Unknown size ..." and "... Subsequent calls will reuse this
    # data." on stdout; `genesis-jax data prepare` prints its own summary, and nothing is downloaded here.
    def _log_download_bytes(self) -> None:
        pass

    def _log_download_done(self) -> None:
        pass

    def _metadata(self) -> tfds.core.MetadataDict:
        return tfds.core.MetadataDict(params=json.loads(json.dumps(data_params(self.params))))

    def _make_info(self, features: dict[str, Any], description: str) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=description,
                                     features=tfds.features.FeaturesDict(features), metadata=self._metadata())

    # --- reading with the skip policy -------------------------------------------------------------------------
    def guarded(self, what: str, fn: Callable[[], Any]) -> Any | None:
        """Run ``fn``; on a scan error skip (log, record, return None) or raise, per params['on_error']."""
        try:
            return fn()
        except SCAN_ERRORS as err:
            self.skip(what, str(err) if str(err).startswith(what) else f"{what}: {err}", cause=err)
            return None

    def skip(self, what: str, reason: str, cause: BaseException | None = None) -> None:
        """An input that cannot be used: logged and listed in the report (on_error='skip'), or the build stops with
        ``reason`` (on_error='raise')."""
        if self.params.get("on_error", "skip") != "skip":
            raise DatasetError(f"{reason} (on_error='raise')") from cause
        log.warning("skipped %s", reason)
        self.report.skipped.append((what, reason))

    def files_below(self, root: Path, pattern: str) -> list[Path]:
        """Files under ``root`` whose name matches ``pattern`` (fnmatch), sorted; a folder that cannot be listed is
        skipped and named (or raised) once per build, not passed over as ``Path.rglob`` does."""
        if not hasattr(self, "_files_below"):
            self._files_below: list[Path] = []
            for dirpath, dirnames, filenames in os.walk(root, onerror=lambda err: self.unlistable(
                    Path(err.filename or root), err)):
                dirnames.sort()
                self._files_below += [Path(dirpath) / f for f in filenames]
        return sorted(p for p in self._files_below if fnmatch.fnmatch(p.name, pattern))

    def unlistable(self, folder: Path, err: OSError) -> None:
        """``discover_volumes``' callback: a folder that cannot be listed is skipped and named (or raised)."""
        self.skip(str(folder), f"{folder}: cannot list the folder ({err.strerror or err}); its scans are missed",
                  cause=err)

    def read_image(self, path: Path | str) -> Volume:
        """Read (and resample when params['target_spacing'] is set) an image volume."""
        volume = read_volume(path)
        self.report.scans_read += 1
        spacing = self.params.get("target_spacing") or ()
        return resample(volume, tuple(spacing)) if len(spacing) else volume

    def normalized(self, volume: Volume, modality: str | None = None) -> np.ndarray:
        p = self.params
        return normalize_volume(volume.array, modality or p.get("modality", "ct"), hu_min=p.get("hu_min", -1000.0),
                                hu_max=p.get("hu_max", 1000.0), mr_method=p.get("mr_method", "minmax"),
                                mr_percentiles=tuple(p.get("mr_percentiles", (0.5, 99.5))))

    def count(self, split: str, examples: Iterable[tuple[str, dict]]) -> Iterator[tuple[str, dict]]:
        """``examples`` of ``split``, counted (and their scan ids listed) in the report as they are written."""
        scans = self.report.split_scans.setdefault(split, [])  # now: a split that yields nothing is still known

        def counted():
            for key, example in examples:
                self.report.examples[split] = self.report.examples.get(split, 0) + 1
                sid = example.get("scan_id")
                if isinstance(sid, str) and (not scans or scans[-1] != sid):
                    scans.append(sid)
                yield key, example
        return counted()

    def manual_root(self, dl_manager) -> Path:
        manual = self.params.get("manual_dir") or ""
        root = Path(manual).expanduser() if manual else Path(dl_manager.manual_dir)
        if not root.is_dir():
            raise DatasetError(f"{root}: manual directory does not exist; set --config.data.manual_dir")
        return root


# --- building and opening a builder from a config.data block ----------------------------------------------------
# Paths differ between machines without changing the data: not compared when a prepared dataset is opened.
_PATH_PARAMS = ("manual_dir",)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


def builder_of(cls: type[GenesisBuilder], data_config, *, split_inputs: dict | None = None) -> GenesisBuilder:
    """A ``cls`` builder configured by the whole ``data_config`` block (``split_inputs``: {split: [(scan_id, path)]}
    fixes the scans of each split)."""
    params = _jsonable(data_config.to_dict())
    if split_inputs is not None:
        params["split_inputs"] = {k: [[str(s), str(p)] for s, p in v] for k, v in split_inputs.items()}
    config = GenesisDataConfig(name=data_config.name, version=cls.VERSION, params=params,
                               description=f"genesis_jax {cls.name}/{data_config.name}")
    return cls(config=config, data_dir=str(resolve_data_dir(data_config.get("data_dir", ""))),
               file_format="array_record")


def _flat(params: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _shown(value: Any) -> str:
    if value is _ABSENT:
        return "absent"
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


_ABSENT = object()


def settings_diff(builder: GenesisBuilder, data_config) -> list[str]:
    """The data settings in which the prepared dataset of ``builder`` differs from ``data_config`` (recorded in its
    dataset info when it was written), each as ``field: prepared X, now Y`` with the nested field's dotted name
    (``cubes.margins``); [] when they agree."""
    recorded = _flat(dict(builder.info.metadata.get("params", {})))
    current = _flat(data_params(_jsonable(data_config.to_dict())))
    for key in _PATH_PARAMS:
        recorded.pop(key, None)
        current.pop(key, None)
    return [f"{k}: prepared {_shown(recorded.get(k, _ABSENT))}, now {_shown(current.get(k, _ABSENT))}"
            for k in sorted(set(recorded) | set(current)) if recorded.get(k, _ABSENT) != current.get(k, _ABSENT)]


def open_prepared(builder: GenesisBuilder, data_config, split: str):
    """Random-access ArrayRecord source of a prepared split of ``builder``; errors say how to prepare or what
    differs."""
    if not builder.is_prepared():
        raise DatasetError(f"dataset {data_config.builder}/{data_config.name} is not prepared in {builder.data_dir}; "
                           f"run `genesis-jax data prepare --config=<this config>` first")
    diff = settings_diff(builder, data_config)
    if diff:
        raise DatasetError(f"{builder.data_dir} was prepared with other settings ({'; '.join(diff)}); prepare again "
                           f"with --config.data.overwrite=True or choose another --config.data.name")
    splits = list(builder.info.splits.keys())
    if split not in splits:
        raise DatasetError(f"{builder.data_dir} has no split {split!r}; it has {splits}")
    return builder.as_data_source(split)
