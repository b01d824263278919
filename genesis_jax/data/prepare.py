"""``genesis-jax data prepare``: read volumes, extract cubes / crops, write a TFDS ArrayRecord dataset, summarise.

The entry function ``prepare(data_config)`` gathers the inputs (synthetic phantoms written as NIfTI into the data
dir, the TotalSegmentator samples, or ``manual_dir``), runs the builder named by ``data_config.builder`` and returns
a summary: scans read, skipped (with the reason), examples written per split, bytes on disk, where it is.

Memory stays bounded whatever the number of scans: builders stream one scan at a time, and TFDS' write buffer
(1 GiB by default, after which it spills to 1,000 temporary bucket files, read back one at a time) is capped at
``data_config.memory_buffer_mb`` while preparing; without TensorFlow the spill goes through ``_LocalFiles``.
A failed build leaves only TFDS' ``incomplete.*`` directory, removed on the way out, and an overwrite that fails
leaves the previous dataset in place. A dataset is reused only when the settings recorded with it match the
config's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from genesis_jax.config_checks import validate_data_config
from genesis_jax.data.builders import DatasetError, make_builder, resolve_data_dir, settings_diff
from genesis_jax.data.builders.base import terminal_progress
from genesis_jax.data.folders import SPLIT_FILE, record_dir
from genesis_jax.data.sources import split_scans
from genesis_jax.workdir import full_disk_named, hold

REPORT_FILE = "prepare_report.json"
log = logging.getLogger(__name__)


@dataclasses.dataclass
class PrepareSummary:
    dataset_dir: str
    scans_read: int
    skipped: list[tuple[str, str]]
    examples: dict[str, int]
    bytes_on_disk: int
    seconds: float
    reused: bool
    split_scans: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)  # what a dataset-folder prepare adds (split file...)

    def lines(self) -> list[str]:
        out = [f"dataset: {self.dataset_dir}" + (" (already prepared: reused)" if self.reused else ""),
               f"scans read: {self.scans_read} (opened successfully)",
               f"skipped: {len(self.skipped)}"]
        out += [f"  - {reason}" for _, reason in self.skipped]
        out += [f"examples written: {sum(self.examples.values())} "
                f"({', '.join(f'{k} {v}' for k, v in sorted(self.examples.items()))})"]
        out += [f"  {split}: {len(scans)} scan(s): {_names(scans)}" for split, scans in self.split_scans.items()]
        out += [f"bytes on disk: {self.bytes_on_disk:,} ({self.bytes_on_disk / 2 ** 20:.1f} MiB)",
                f"time: {self.seconds:.1f} s", *self.notes]
        return out


def _names(scans: list[str], shown: int = 12) -> str:
    return ", ".join(scans[:shown]) + (f", ... ({len(scans) - shown} more)" if len(scans) > shown else "")


class _LocalFiles:
    """The few ``tf.io.gfile`` calls TFDS' example shuffler makes when it spills to disk, on local files.

    Without TensorFlow installed, TFDS' writer keeps every example in memory until the end of a split (up to
    1 GiB, then it needs TensorFlow to spill). With this stand-in it can spill without TensorFlow.
    """

    class io:  # noqa: N801 (mirrors tf.io.gfile)
        class gfile:  # noqa: N801
            GFile = staticmethod(lambda path, mode="r": open(path, mode))
            exists = staticmethod(os.path.exists)
            remove = staticmethod(os.remove)

    class errors:  # noqa: N801
        class ResourceExhaustedError(OSError):
            """Never raised by local files; TFDS only names it in an except clause."""


@contextlib.contextmanager
def bounded_write_buffer(megabytes: int) -> Iterator[None]:
    """Cap TFDS' in-memory example buffer while a dataset is written; spill files work without TensorFlow.

    Both are module attributes of tensorflow_datasets.core.shuffle read at run time; they are restored on exit.
    """
    from tensorflow_datasets.core import shuffle

    previous = shuffle.MAX_MEM_BUFFER_SIZE, shuffle.tf
    shuffle.MAX_MEM_BUFFER_SIZE = int(megabytes) << 20
    if importlib.util.find_spec("tensorflow") is None:
        shuffle.tf = _LocalFiles
    try:
        yield
    finally:
        shuffle.MAX_MEM_BUFFER_SIZE, shuffle.tf = previous


def _write_phantoms(data_config, directory: Path) -> dict[str, list[tuple[str, str]]]:
    """Write the configured phantoms as int16 NIfTI (once) and return {split: [(scan_id, path)]}."""
    import nibabel as nib

    from genesis_jax.data.phantom import phantom_affine, synthetic_ct

    directory.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[tuple[str, str]]] = {}
    shape = tuple(int(s) for s in data_config.synthetic.shape)
    for split in ("train", "validation"):
        for sid, seed in split_scans(data_config, split):
            path = directory / f"{sid}_{'x'.join(map(str, shape))}_seed{seed}.nii.gz"
            if not path.exists():
                ph = synthetic_ct(shape, seed=seed)
                tmp = path.with_name(".tmp-" + path.name)
                nib.save(nib.Nifti1Image(np.rint(ph["image"]).astype(np.int16), phantom_affine(ph["spacing"])),
                         str(tmp))
                tmp.replace(path)
            out.setdefault(split, []).append((sid, str(path)))
    return out


def _sample_inputs(data_config) -> dict[str, list[tuple[str, str]]]:
    from genesis_jax.data.samples import sample_info

    return {split: [(name, sample_info(name)["image"]) for name, _ in split_scans(data_config, split)]
            for split in ("train", "validation", "test") if data_config.samples.get(split)}


def _split_inputs(data_config) -> dict[str, list[tuple[str, str]]] | None:
    if data_config.builder == "dataset_cubes":  # cut from a dataset folder's prepared volumes
        return None
    source = data_config.source
    if data_config.builder != "genesis_cubes" or source == "directory":
        if not data_config.manual_dir:
            raise DatasetError(f"{data_config.builder}: set --config.data.manual_dir to the input directory")
        return None
    if source == "synthetic":
        return _write_phantoms(data_config, resolve_data_dir(data_config.data_dir) / "manual" / "phantoms")
    if source == "samples":
        return _sample_inputs(data_config)
    raise DatasetError(f"config.data.source must be 'synthetic', 'samples' or 'directory', got {source!r}")


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def remove_stale_builds(dataset_dir: Path) -> list[Path]:
    """Delete the ``incomplete.<XXXXXX>_<version>`` directories TFDS leaves beside ``dataset_dir`` when a build is
    killed (kill -9, power loss: its own clean-up never ran); called right before a new build of that dataset, so
    they cannot pile up. Safe because the caller holds the dataset's lock (one writer). Returns what was removed."""
    stale = sorted(dataset_dir.parent.glob(f"incomplete.*_{dataset_dir.name}")) if dataset_dir.parent.is_dir() else []
    for path in stale:
        log.warning("%s: removing the unfinished build of an earlier, interrupted run", path)
        shutil.rmtree(path, ignore_errors=True)
    return stale


def prepare(data_config) -> PrepareSummary:
    """Build the dataset ``data_config`` describes (or reuse it) and return the summary.

    Holds the dataset's lock (one ``data prepare`` per dataset at a time). A dataset prepared with other settings
    is an error naming them, unless ``overwrite``; an overwrite builds the new dataset while the old one waits
    beside it (``.<version>.previous``), so a failed or killed rebuild leaves the old one in place.
    """
    validate_data_config(data_config)
    dataset_dir = Path(make_builder(data_config).data_dir)
    with hold(dataset_dir.parent, "data prepare"), full_disk_named(
            dataset_dir, "the dataset was not written (an earlier one, if any, is kept)"):
        return _prepare(data_config, dataset_dir)


def _prepare(data_config, dataset_dir: Path) -> PrepareSummary:
    import tensorflow_datasets as tfds

    start = time.time()
    previous = dataset_dir.with_name(f".{dataset_dir.name}.previous")
    if previous.exists() and not dataset_dir.exists():  # an overwrite killed midway: the old dataset comes back
        os.replace(previous, dataset_dir)
    shutil.rmtree(previous, ignore_errors=True)
    builder = make_builder(data_config, split_inputs=_split_inputs(data_config))
    reused = builder.is_prepared() and not data_config.overwrite
    if reused and (diff := settings_diff(builder, data_config)):
        raise DatasetError(f"{dataset_dir} was prepared with other settings ({'; '.join(diff)}); nothing was "
                           "rebuilt: pass --config.data.overwrite=True to rebuild it, or choose another "
                           "--config.data.name to keep both")
    if not reused:
        remove_stale_builds(dataset_dir)
        if dataset_dir.exists():  # overwrite: keep the old dataset beside until the new one is complete
            os.replace(dataset_dir, previous)
            builder = make_builder(data_config, split_inputs=_split_inputs(data_config))
        download_config = tfds.download.DownloadConfig(manual_dir=data_config.manual_dir or None,
                                                       download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
        try:
            _build(builder, data_config, download_config, dataset_dir)
        except BaseException:
            if previous.exists():
                shutil.rmtree(dataset_dir, ignore_errors=True)
                os.replace(previous, dataset_dir)
            raise
        shutil.rmtree(previous, ignore_errors=True)
    report: dict[str, Any] = json.loads((dataset_dir / REPORT_FILE).read_text()) if (
        dataset_dir / REPORT_FILE).exists() else builder.report.to_json()
    examples = {name: int(split.num_examples) for name, split in builder.info.splits.items()}
    return PrepareSummary(dataset_dir=str(dataset_dir), scans_read=int(report["scans_read"]),
                          skipped=[tuple(s) for s in report["skipped"]], examples=examples,
                          bytes_on_disk=_dir_bytes(dataset_dir), seconds=time.time() - start, reused=reused,
                          split_scans=dict(report.get("split_scans", {})))


def _build(builder: Any, data_config, download_config: Any, dataset_dir: Path) -> None:
    try:
        with bounded_write_buffer(int(data_config.memory_buffer_mb)), terminal_progress():
            builder.download_and_prepare(download_config=download_config)
    except AssertionError as err:
        if "No examples were yielded" not in str(err):
            raise
        reasons = "; ".join(r for _, r in builder.report.skipped) or "no scan gave an example"
        split = next(iter(builder.report.empty_splits()), "?")
        raise DatasetError(f"{data_config.builder}/{data_config.name}: the {split!r} split got no example "
                           f"({reasons}); {_empty_split_hint(split, data_config)}") from None
    (dataset_dir / REPORT_FILE).write_text(json.dumps(builder.report.to_json(), indent=1))


def _empty_split_hint(split: str, data_config) -> str:
    if split == "validation":
        volumes = data_config.get("volumes") or data_config  # a cube dataset cut from a dataset folder's volumes
        where = (f"list more cases under \"validation\" in the split file "
                 f"{record_dir(volumes.data_dir, volumes.name) / SPLIT_FILE}"
                 if data_config.builder in ("dataset_volumes", "dataset_cubes") else "")
        return (f"its scans gave nothing: raise config.data.validation_fraction (now "
                f"{data_config.get('validation_fraction')}) so more scans are held out"
                + (f", or {where}" if where else "") + "; or fix the scans named above")
    return "every scan of it was skipped or gave nothing: fix the scans or the settings named above"
