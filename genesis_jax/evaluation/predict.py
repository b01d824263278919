"""Inference on unlabelled scans (``genesis-jax predict``): label maps on each input's own grid, in its format.

What it owns:

* **The settings a fine-tuned network needs at inference** (:class:`InferenceSettings`): the voxel spacing and
  intensity normalisation it was trained with, its window and the sliding-window options. A fine-tuning export
  records them in its weights' ``metadata.json`` (``inference``); older weights fall back to the run's
  ``config.json`` (beside ``weights/`` or at the recorded ``workdir``), else to defaults that are said.
* **Finding the cases** (:func:`find_cases`): one file, a DICOM series directory, or a folder of them. nnU-Net
  names ``<case>_0000.nii.gz``, ``<case>_0001.nii.gz`` ... are the channels of one case, written as
  ``<case>.nii.gz``; other files keep their name; a DICOM series ``<dir>`` becomes ``<dir>.nii.gz``.
* **One case** (:meth:`Predictor.predict_case`): read each channel on its file grid, turn it to the canonical
  (RAS+) orientation training used, resample to the training spacing (linear), normalise, predict by sliding window
  (Gaussian blending, optional mirroring), take labels (one sigmoid output: ``p > threshold`` -> {0, 1}; a softmax
  head: argmax -> class ids), resample them back with nearest neighbours (probabilities linearly) to exactly the
  input's shape and undo the orientation, so the output's shape and affine (NIfTI) or origin/spacing/direction
  (MetaImage) are the input's.
* **Writing** uint8 label maps as NIfTI (the input's header, data type uint8) or MetaImage, and optional
  probabilities as NIfTI quantised to uint8 (``round(255 p)``, ``scl_slope`` = 1/255 so viewers show [0, 1]; at
  most 0.002 off), each through a temporary file renamed into place: a kill leaves no partial output, and a
  rerun skips the cases whose outputs exist.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from genesis_jax.data.dicom import is_dicom_file
from genesis_jax.data.metaimage import write_metaimage
from genesis_jax.data.normalize import normalize_volume
from genesis_jax.data.readers import Volume, is_volume_file, read_volume, resample, spacing_from_affine, zoom_to_shape
from genesis_jax.evaluation.postprocess import keep_largest_component, keep_largest_component_per_class
from genesis_jax.evaluation.sliding_window import SlidingWindow, slicewise
from genesis_jax.evaluation.test_set import eval_model_config
from genesis_jax.models import build_model, contract
from genesis_jax.models.weights import is_weights_dir, load_weights
from genesis_jax.workdir import atomic_file, sibling_tmp_dir

log = logging.getLogger(__name__)

NNUNET_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
PROBABILITIES_SUFFIX = "_probabilities.nii.gz"
DEFAULT_WINDOW = (64, 64, 32)  # the published fine-tuning patch
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class PredictError(ValueError):
    """Weights that cannot segment, or a case that cannot be predicted; the message names the file."""


# --- settings ------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    """How a fine-tuned segmentation network reads a scan: the training grid and intensities, and its window.

    target_spacing: mm per voxel (x, y, z) of the training volumes; () = each scan's own grid.
    modality, hu_min, hu_max, mr_method, mr_percentiles: :func:`genesis_jax.data.normalize.normalize_volume`.
    window, overlap, blend, batch_size: the sliding window (``config.eval``); threshold: the sigmoid cut;
    largest_component: keep the largest connected foreground component only (softmax heads: of each class).
    prune_level, mode: UNet++ evaluation network (``config.eval``).
    """

    window: tuple[int, ...] = DEFAULT_WINDOW
    target_spacing: tuple[float, ...] = ()
    modality: str = "ct"
    hu_min: float = -1000.0
    hu_max: float = 1000.0
    mr_method: str = "minmax"
    mr_percentiles: tuple[float, float] = (0.5, 99.5)
    overlap: float = 0.5
    blend: str = "gaussian"
    batch_size: int = 4
    threshold: float = 0.5
    largest_component: bool = False
    prune_level: int | None = None
    mode: str = "accurate"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> InferenceSettings:
        """From a fine-tuning config (``config.to_dict()`` or a run's ``config.json``)."""
        data, ev = dict(config.get("data") or {}), dict(config.get("eval") or {})
        input_shape = tuple(int(s) for s in config.get("input_shape") or ())
        window = tuple(int(w) for w in ev.get("window") or input_shape[:-1]) or DEFAULT_WINDOW
        picked = dict(window=window, target_spacing=data.get("target_spacing"), modality=data.get("modality"),
                      hu_min=data.get("hu_min"), hu_max=data.get("hu_max"), mr_method=data.get("mr_method"),
                      mr_percentiles=data.get("mr_percentiles"), overlap=ev.get("overlap"), blend=ev.get("blend"),
                      batch_size=ev.get("batch_size"), threshold=ev.get("threshold"),
                      largest_component=ev.get("largest_component"),
                      prune_level=ev.get("prune_level"), mode=ev.get("mode"))
        return cls.from_dict({k: v for k, v in picked.items() if v is not None or k == "prune_level"})

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> InferenceSettings:
        """From :meth:`as_dict` (a weights directory's ``metadata.json``); unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in values.items() if k in names}
        for key in ("window", "target_spacing", "mr_percentiles"):
            if key in kept:
                kept[key] = tuple(kept[key] or ())
        return cls(**kept)

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def inference_settings(weights_dir: Path, metadata: Mapping[str, Any]) -> tuple[InferenceSettings, str]:
    """(settings, where they came from): the weights' metadata, else the fine-tuning run's ``config.json``, else
    defaults (native spacing, CT window [-1000, 1000] HU, a 64x64x32 window)."""
    if isinstance(metadata.get("inference"), Mapping):
        return InferenceSettings.from_dict(metadata["inference"]), f"{weights_dir / 'metadata.json'}"
    candidates = [weights_dir.parent / "config.json"]
    if metadata.get("workdir"):
        candidates.insert(0, Path(str(metadata["workdir"])) / "config.json")
    for path in candidates:
        if path.is_file():
            try:
                config = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(config, dict) and "input_shape" in config:
                return InferenceSettings.from_config(config), str(path)
    return InferenceSettings(), "defaults (no recorded settings beside the weights)"


# --- cases -----------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Case:
    """One scan to predict: its channel files (or DICOM series directories), in channel order, and its output."""

    name: str  # the output's path under OUT without its ending, e.g. 'liver_003' or 'sub/liver_003'
    channels: list[Path]
    ending: str  # '.nii.gz', '.nii', '.mha' or '.mhd'
    channel_ids: list[int] = dataclasses.field(default_factory=lambda: [0])  # the files' _XXXX numbers

    def labels_path(self, out_dir: Path) -> Path:
        return out_dir / f"{self.name}{self.ending}"

    def probabilities_path(self, out_dir: Path) -> Path:
        return out_dir / f"{self.name}{PROBABILITIES_SUFFIX}"


def _split_name(path: Path) -> tuple[str, str]:
    """(stem, output ending) of a volume file: NIfTI keeps .nii/.nii.gz, MetaImage .mha/.mhd; Analyze and NRRD
    give .nii.gz."""
    lower = path.name.lower()
    for suffix, ending in ((".nii.gz", ".nii.gz"), (".nii", ".nii"), (".mha", ".mha"), (".mhd", ".mhd"),
                           (".img", ".nii.gz"), (".nrrd", ".nii.gz")):  # no NRRD writer: NRRD gives NIfTI
        if lower.endswith(suffix):
            return path.name[: -len(suffix)], ending
    return path.name, ".nii.gz"


def _has_dicom(directory: Path) -> bool:
    return any(f.is_file() and is_dicom_file(f) for f in directory.iterdir())


def find_cases(input_path: str | os.PathLike, exclude: str | os.PathLike | None = None) -> list[Case]:
    """The cases under ``input_path``: a volume file, a DICOM series directory, or a folder (searched
    recursively, skipping ``exclude``: an output folder inside the input) of volume files and series directories.
    Files named ``<case>_<4 digits>`` with one ending are grouped as the channels of ``<case>``."""
    root = Path(input_path).expanduser()
    skip = Path(exclude).expanduser().resolve() if exclude is not None else None
    if not root.exists():
        raise PredictError(f"{root}: no such file or directory")
    if root.is_file():
        stem, ending = _split_name(root)
        match = NNUNET_CHANNEL.match(stem)
        return [Case(match["case"] if match else stem, [root], ending, [int(match["channel"]) if match else 0])]
    if _has_dicom(root) and not any(is_volume_file(f) for f in root.iterdir()):
        return [Case(root.resolve().name, [root], ".nii.gz")]
    groups: dict[tuple[str, str, str], list[tuple[int, Path]]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if skip is None or (Path(dirpath) / d).resolve() != skip)
        here = Path(dirpath)
        rel = here.relative_to(root)
        volumes = sorted(f for f in filenames if is_volume_file(f))
        for f in volumes:
            stem, ending = _split_name(here / f)
            match = NNUNET_CHANNEL.match(stem)
            key = (rel.as_posix(), match["case"] if match else stem, ending)
            groups.setdefault(key, []).append((int(match["channel"]) if match else 0, here / f))
        if not volumes and here != root and filenames and _has_dicom(here):
            groups[(rel.parent.as_posix(), here.name, ".nii.gz")] = [(0, here)]
    cases = []
    for (folder, case, ending), files in sorted(groups.items()):
        files = sorted(files)
        name = case if folder in ("", ".") else f"{folder}/{case}"
        cases.append(Case(name, [p for _, p in files], ending, [c for c, _ in files]))
    return cases


# --- geometry ------------------------------------------------------------------------------------------------------

def _orientations(affine: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(to canonical, back to the file's axes, the canonical affine) for a volume on ``affine``."""
    from nibabel import orientations

    to_canonical = orientations.io_orientation(affine)
    back = orientations.ornt_transform(np.array([[0, 1], [1, 1], [2, 1]]), to_canonical)
    canonical_affine = affine @ orientations.inv_ornt_aff(to_canonical, shape[:3])
    return to_canonical, back, canonical_affine


def _reorient(array: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    from nibabel import orientations

    return np.ascontiguousarray(orientations.apply_orientation(array, ornt))


@dataclasses.dataclass
class CaseResult:
    """What one case gave: its outputs, class voxel counts, input voxels and seconds."""

    case: Case
    written: list[Path]
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    counts: dict[int, int]
    windows: int
    seconds: float

    @property
    def voxels(self) -> int:
        return int(np.prod(self.shape))


# --- the predictor -------------------------------------------------------------------------------------------------

def _check_segmentation_weights(weights_dir: Path, model_config: Mapping[str, Any], metadata: Mapping[str, Any]
                                ) -> tuple[int, str]:
    """(number of output channels, 'sigmoid' or 'softmax') of a segmentation network, else PredictError."""
    name = model_config.get("name")
    try:
        task = contract(dict(model_config)).task
    except ValueError as err:
        raise PredictError(f"{weights_dir}: {err}") from None
    if task != "segmentation":
        raise PredictError(f"{weights_dir}: these are {task} weights ({name}); predict needs a segmentation "
                           "network (a fine-tuned segmentation run's weights/)")
    if metadata.get("source") == "genesis_jax pretrain":
        raise PredictError(f"{weights_dir}: these are restoration pre-training weights, never trained to segment; "
                           "fine-tune them first: genesis-jax finetune --init=<these weights>")
    classes = int(model_config.get("num_classes", 1))
    head = str(metadata.get("head") or model_config.get("head_activation") or "")
    if head not in ("sigmoid", "softmax"):  # logits: the activation the channel count implies
        head = "sigmoid" if classes == 1 else "softmax"
    if head == "sigmoid" and classes > 1:
        raise PredictError(f"{weights_dir}: {classes} independent sigmoid outputs are not one label map; predict "
                           "takes one sigmoid output (binary) or a softmax head (class ids)")
    if head == "softmax" and classes < 2:
        raise PredictError(f"{weights_dir}: a softmax head with {classes} output cannot segment")
    return classes, head


class Predictor:
    """A segmentation network from a weights directory, ready to predict cases.

    Args:
      weights: a weights directory, or a fine-tuning workdir holding one (``weights/``).
      overlap, batch_size: override the recorded sliding-window settings.
      mirror: test-time mirroring along every spatial axis (8 network calls per 3D window).
    """

    def __init__(self, weights: str | os.PathLike, *, overlap: float | None = None, batch_size: int | None = None,
                 mirror: bool = False):
        weights_dir = Path(weights).expanduser()
        if is_weights_dir(weights_dir / "weights"):
            weights_dir = weights_dir / "weights"
        self.weights_dir = weights_dir
        variables, model_config, metadata = load_weights(weights_dir)
        self.num_classes, self.head = _check_segmentation_weights(weights_dir, model_config, metadata)
        settings, self.settings_source = inference_settings(weights_dir, metadata)
        changes = {k: v for k, v in (("overlap", overlap), ("batch_size", batch_size)) if v is not None}
        self.settings = dataclasses.replace(settings, **changes)
        labels = metadata.get("labels")
        # name -> class id; a region (a list of ids, as nnU-Net's dataset.json allows) names no single class id
        self.label_names = {int(v): str(k) for k, v in labels.items() if isinstance(v, int)} \
            if isinstance(labels, Mapping) else {}
        self.in_channels = int(model_config.get("in_channels", 1))
        s = self.settings
        model = build_model(eval_model_config(dict(model_config), ml_collections.ConfigDict(
            {"prune_level": s.prune_level, "mode": s.mode})))
        activation = model_config.get("head_activation")

        def predict(params: Any, x: jax.Array) -> jax.Array:
            out = model.apply(params, x)
            if activation in (None, "none"):  # a logits head: the probabilities the head kind implies
                out = jax.nn.sigmoid(out) if self.head == "sigmoid" else jax.nn.softmax(out, axis=-1)
            return out

        window = tuple(s.window)
        spatial_axes = tuple(range(len(window)))
        if len(window) == 2:  # a 2D network over 3D volumes: axial slices
            predict, window = slicewise(predict), (*window, 1)
        self.mirror = bool(mirror)
        self.sliding = SlidingWindow(predict, window, s.overlap, s.batch_size, s.blend, num_classes=self.num_classes,
                                     mirror_axes=spatial_axes if mirror else ())
        self.variables = jax.device_put(variables)
        self.model_config = dict(model_config)

    @property
    def class_ids(self) -> list[int]:
        return [0, 1] if self.head == "sigmoid" else list(range(self.num_classes))

    def describe(self) -> str:
        s = self.settings
        spacing = "x".join(f"{v:g}" for v in s.target_spacing) + " mm" if s.target_spacing else "each scan's own"
        intensity = f"CT [{s.hu_min:g}, {s.hu_max:g}] HU" if s.modality == "ct" else f"MR {s.mr_method}"
        names = ", ".join(f"{i}={self.label_names.get(i, '?')}" for i in self.class_ids) if self.label_names else \
            "/".join(str(i) for i in self.class_ids)
        width = self.model_config.get("base_width") or self.model_config.get("features_per_stage")
        return (f"{self.weights_dir}: {self.model_config.get('name')} width {width}, "
                f"{self.head} head, classes {names}; spacing {spacing}, {intensity}, window "
                f"{'x'.join(map(str, s.window))}, overlap {s.overlap:g}, {s.blend} blending"
                f"{', mirrored' if self.mirror else ''} (settings from {self.settings_source})")

    # -- one case ---------------------------------------------------------------------------------------------
    def _read(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        """(array (X, Y, Z, C) on the file's grid, affine); all channels on one grid."""
        if len(case.channels) != self.in_channels:
            names = ", ".join(p.name for p in case.channels)
            raise PredictError(f"{case.channels[0]}: case {case.name} has {len(case.channels)} channel file(s) "
                               f"({names}) but the network takes {self.in_channels} (nnU-Net names <case>_0000 ... "
                               f"<case>_{self.in_channels - 1:04d})")
        if case.channel_ids != list(range(len(case.channels))):
            raise PredictError(f"{case.channels[0]}: case {case.name} has channels "
                               f"{', '.join(f'_{c:04d}' for c in case.channel_ids)}; expected _0000 ... "
                               f"_{len(case.channels) - 1:04d} without gaps")
        volumes = [read_volume(p, canonical=False) for p in case.channels]
        first = volumes[0]
        for vol in volumes[1:]:
            if vol.shape != first.shape or not np.allclose(vol.affine, first.affine, atol=1e-3):
                raise PredictError(f"{vol.path}: grid {vol.shape} differs from its case's first channel "
                                   f"{first.path} {first.shape}")
        return np.stack([v.array for v in volumes], axis=-1), first.affine

    def _network_input(self, canonical: np.ndarray, affine: np.ndarray) -> np.ndarray:
        """Canonical channels (X, Y, Z, C) -> resampled to the training spacing and normalised, float32."""
        s = self.settings
        channels = []
        for c in range(canonical.shape[-1]):
            vol = Volume(canonical[..., c], spacing_from_affine(affine), affine)
            if s.target_spacing:
                vol = resample(vol, tuple(s.target_spacing))
            channels.append(normalize_volume(vol.array, s.modality, hu_min=s.hu_min, hu_max=s.hu_max,
                                             mr_method=s.mr_method, mr_percentiles=tuple(s.mr_percentiles)))
        return np.stack(channels, axis=-1)

    def _labels(self, probs: np.ndarray) -> np.ndarray:
        if self.head == "sigmoid":
            prob = probs[..., 0]
            if self.settings.largest_component:
                prob = keep_largest_component(prob, self.settings.threshold)
            return (prob > self.settings.threshold).astype(np.uint8)
        labels = np.argmax(probs, axis=-1)
        if self.settings.largest_component:
            labels = keep_largest_component_per_class(labels, probs.shape[-1])
        return labels.astype(np.uint8)

    def predict_case(self, case: Case, out_dir: Path, *, save_probabilities: bool = False,
                     progress: Callable[[int, Case], Callable[[int], None]] | None = None) -> CaseResult:
        """Predict ``case`` and write its outputs under ``out_dir``. ``progress(total_windows, case)`` may return a
        per-batch callback (windows done)."""
        started = time.perf_counter()
        array, affine = self._read(case)
        to_canonical, back, canonical_affine = _orientations(affine, array.shape)
        canonical = _reorient(array, to_canonical)
        image = self._network_input(canonical, canonical_affine)
        total = self.sliding.num_windows(image.shape[:3])
        callback = progress(total, case) if progress is not None else None
        probs = self.sliding(self.variables, jnp.asarray(image), progress=callback)
        labels = zoom_to_shape(self._labels(probs), canonical.shape[:3], order=0)
        written = []
        if save_probabilities:
            on_grid = zoom_to_shape(probs, canonical.shape[:3], order=1)
            on_grid = on_grid[..., 0] if self.head == "sigmoid" else on_grid
            written.append(write_probabilities(_reorient(on_grid, back), affine, case.probabilities_path(out_dir)))
        labels = _reorient(labels, back)
        written.append(write_labels(labels, affine, case, out_dir))  # last: its presence marks the case done
        ids, counts = np.unique(labels, return_counts=True)
        return CaseResult(case, written, tuple(array.shape[:3]), spacing_from_affine(affine),
                          {int(i): int(n) for i, n in zip(ids, counts)}, total, time.perf_counter() - started)

    def is_done(self, case: Case, out_dir: Path, save_probabilities: bool) -> bool:
        return case.labels_path(out_dir).is_file() and (
            not save_probabilities or case.probabilities_path(out_dir).is_file())


# --- writing -------------------------------------------------------------------------------------------------------

def _nifti_header(source: Path) -> Any | None:
    """The NIfTI header of ``source`` (kept for the output: same qform/sform codes, units), or None."""
    import nibabel as nib

    if source.is_dir() or not source.name.lower().endswith((".nii", ".nii.gz")):
        return None
    return nib.load(str(source)).header.copy()


def write_labels(labels: np.ndarray, affine: np.ndarray, case: Case, out_dir: Path) -> Path:
    """The uint8 label map on the input's grid, in the input's format (DICOM -> NIfTI), written atomically."""
    final = case.labels_path(out_dir)
    labels = np.asarray(labels, np.uint8)
    if case.ending in (".mha", ".mhd"):
        lps = _LPS_TO_RAS @ affine  # MetaImage geometry is LPS
        spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
        direction = lps[:3, :3] / spacing
        if case.ending == ".mha":
            with atomic_file(final) as tmp:
                write_metaimage(tmp, labels, spacing, lps[:3, 3], direction)
        else:  # header + .raw: both written in a scratch directory, the .raw moved first, the header last
            scratch = sibling_tmp_dir(final)
            try:
                write_metaimage(scratch / final.name, labels, spacing, lps[:3, 3], direction)
                os.replace(scratch / final.with_suffix(".raw").name, final.with_suffix(".raw"))
                os.replace(scratch / final.name, final)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        return final
    import nibabel as nib

    header = _nifti_header(case.channels[0])
    image = nib.Nifti1Image(labels, affine, header=header)
    image.header.set_data_dtype(np.uint8)
    image.header.set_slope_inter(1.0, 0.0)
    image.header["descrip"] = b"genesis-jax predict labels"
    with atomic_file(final) as tmp:
        nib.save(image, str(tmp))
    return final


def write_probabilities(probs: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    """Probabilities (X, Y, Z) or (X, Y, Z, K) as NIfTI uint8 round(255 p) with scl_slope 1/255, atomically."""
    import nibabel as nib

    quantised = np.rint(np.clip(probs, 0.0, 1.0) * 255.0).astype(np.uint8)
    image = nib.Nifti1Image(quantised, affine)
    image.header.set_data_dtype(np.uint8)
    image.header.set_slope_inter(1.0 / 255.0, 0.0)
    image.header["descrip"] = b"genesis-jax predict p = value/255"
    with atomic_file(path) as tmp:
        nib.save(image, str(tmp))
    return path


def remove_stale_temporaries(out_dir: Path) -> int:
    """Delete the ``.<name>.tmp-*`` files and directories a killed run left under ``out_dir``; returns how many."""
    stale = [p for p in out_dir.rglob(".*.tmp-*")] if out_dir.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return len(stale)
