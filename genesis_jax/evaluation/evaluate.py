"""Evaluate a trained network on a test set: whole volumes (sliding window), crops, or classification candidates.

Plain arguments only (a predict function, variables, arrays); fine-tuning and ``genesis-jax evaluate`` call these.
Segmentation reports per volume binary Dice and foreground IoU at threshold 0.5 and HD95 in mm (from the volume
spacing); over the whole set (``set``) and for classification, the metrics ``metrics`` names from the one metric
table of validation and test (:mod:`genesis_jax.evaluation.metric_table`; default: the task's: the published Keras
``mean_iou``, IoU, Dice and soft Dice streamed over the set; ROC AUC and accuracy at 0.5). A softmax (multi-class)
network is scored per class (Dice and HD95 per class, per volume and over the set).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import jax
import numpy as np
from tqdm import tqdm

from genesis_jax.evaluation.metric_table import Collected, compute_metrics, metric_names
from genesis_jax.evaluation.metrics import MultiClassAccumulator, binary_dice, class_overlaps, dice_from_overlaps, \
    foreground_iou, hd95
from genesis_jax.evaluation.overlays import save_overlay
from genesis_jax.evaluation.postprocess import keep_largest_component, keep_largest_component_per_class
from genesis_jax.evaluation.sliding_window import SlidingWindow, save_nifti

PredictFn = Callable[[Any, jax.Array], jax.Array]


def _finite_mean(values: Iterable[float]) -> float:
    vals = [v for v in values if np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def segmentation_volume_metrics(
    label: np.ndarray, prob: np.ndarray, spacing: Sequence[float], threshold: float = 0.5
) -> dict[str, float]:
    """Dice, foreground IoU and HD95 (spacing units) of one probability map against its label map."""
    y = np.asarray(label) > 0
    pred = np.asarray(prob) > threshold
    return {
        "dice": binary_dice(y, pred, 0.5),
        "iou": foreground_iou(y, pred, 0.5),
        "hd95": hd95(pred, y, spacing),
        "foreground_voxels": int(y.sum()),
        "predicted_voxels": int(pred.sum()),
    }


def evaluate_volumes(
    sliding: SlidingWindow,
    variables: Any,
    volumes: Sequence[Any],
    threshold: float = 0.5,
    keep_probabilities: bool = False,
    progress: bool = True,
    class_names: dict[str, int] | None = None,
    metrics: Sequence[str] | None = None,
    largest_component: bool = False,
    overlay_class: str | None = None,
) -> dict[str, Any]:
    """Sliding-window predictions for every volume (objects with ``image``, ``label``, ``spacing``, ``name``).

    Returns {'per_volume': [...], 'mean': {...}, 'set': {the ``metrics`` over all voxels}} and, with
    ``keep_probabilities``, 'probabilities': {name: (*spatial,) map of channel 0}. A softmax network (more than one
    output channel) is scored per class instead (:func:`evaluate_volumes_multiclass`). ``largest_component``: keep
    only the largest connected foreground component of each binary prediction (of each class of a softmax
    network's; :mod:`.postprocess`). ``overlay_class``: a softmax network's class whose probability 'probabilities'
    holds (default: every foreground class together).
    """
    if sliding.num_classes > 1:
        return evaluate_volumes_multiclass(sliding, variables, volumes, keep_probabilities, progress, class_names,
                                           largest_component, overlay_class)
    collected = Collected()
    per_volume, probabilities = [], {}
    for vol in tqdm(volumes, desc="evaluate volumes", disable=not progress, leave=False):
        prob = sliding(variables, vol.image)[..., 0]
        if largest_component:
            prob = keep_largest_component(prob, threshold)
        label = (np.asarray(vol.label) > 0).astype(np.float32)
        collected.add_segmentation(label[None], prob[None])
        row = {"name": vol.name, **segmentation_volume_metrics(label, prob, vol.spacing, threshold)}
        per_volume.append(row)
        if keep_probabilities:
            probabilities[vol.name] = prob
    out: dict[str, Any] = {
        "per_volume": per_volume,
        "mean": {k: _finite_mean(r[k] for r in per_volume) for k in ("dice", "iou", "hd95")},
        "set": compute_metrics(metric_names("segmentation", metrics), collected),
    }
    if keep_probabilities:
        out["probabilities"] = probabilities
    return out


def evaluate_volumes_multiclass(
    sliding: SlidingWindow,
    variables: Any,
    volumes: Sequence[Any],
    keep_probabilities: bool = False,
    progress: bool = True,
    class_names: dict[str, int] | None = None,
    largest_component: bool = False,
    overlay_class: str | None = None,
) -> dict[str, Any]:
    """A softmax network over whole volumes: the arg-max class map against each volume's class-id label map.

    Per volume and foreground class: Dice and HD95 (mm); 'mean' the mean over volumes per class and over classes;
    'set' the per-class Dice over every voxel (:class:`MultiClassAccumulator`). With ``keep_probabilities``,
    'probabilities' holds each volume's foreground probability (1 - background), which the overlays draw.
    """
    k = sliding.num_classes
    names = {int(i): str(n) for n, i in (class_names or {}).items()}
    names = {i: names.get(i, str(i)) for i in range(1, k)}
    acc = MultiClassAccumulator(k, {n: i for i, n in names.items()})
    overlay_id = None
    if overlay_class:
        ids = {n: i for i, n in names.items()}
        if overlay_class not in ids:
            raise ValueError(f"config.eval.overlay_class={overlay_class!r} is not a class of this network: "
                             f"{sorted(ids)}")
        overlay_id = ids[overlay_class]
    per_volume, probabilities = [], {}
    for vol in tqdm(volumes, desc="evaluate volumes", disable=not progress, leave=False):
        prob = sliding(variables, vol.image)
        predicted = prob.argmax(-1)
        if largest_component:  # removed voxels go to the background, in the class map and in the probabilities
            kept = keep_largest_component_per_class(predicted, k)
            prob = np.where(((kept == 0) & (predicted != 0))[..., None], np.eye(k, dtype=prob.dtype)[0], prob)
            predicted = kept
        label = np.rint(np.asarray(vol.label)).astype(np.int64)
        acc.update(label, prob)
        dice = dice_from_overlaps(class_overlaps(label, predicted, k))
        row: dict[str, Any] = {"name": vol.name}
        for i, name in names.items():
            row[f"dice_{name}"] = float(dice[i])
            row[f"hd95_{name}"] = hd95(predicted == i, label == i, vol.spacing)
        per_volume.append(row)
        if keep_probabilities:
            probabilities[vol.name] = prob[..., overlay_id] if overlay_id else 1.0 - prob[..., 0]
    mean = {key: _finite_mean(r[key] for r in per_volume) for key in per_volume[0] if key != "name"} \
        if per_volume else {}
    mean["dice"] = _finite_mean(mean.get(f"dice_{n}", float("nan")) for n in names.values())
    mean["hd95"] = _finite_mean(mean.get(f"hd95_{n}", float("nan")) for n in names.values())
    out: dict[str, Any] = {"per_volume": per_volume, "mean": mean, "set": acc.result(), "classes": names}
    if overlay_id:
        out["overlay_class"] = {"name": overlay_class, "id": overlay_id}
    if keep_probabilities:
        out["probabilities"] = probabilities
    return out


def export_predictions(
    probabilities: dict[str, np.ndarray],
    volumes: Sequence[Any],
    out_dir: str | Path,
    nifti: bool = True,
    overlays: bool = True,
    threshold: float = 0.5,
    overlay_class: dict[str, Any] | None = None,
) -> list[Path]:
    """For each volume (``name``, ``image``, ``label``, ``affine``): the probability map as NIfTI on the input's grid
    (``<name>_prob.nii.gz``, the input's affine) and an overlay PNG (``<name>_overlay.png``; the reference outline is
    the label's class ``overlay_class`` ({'name', 'id'} as a softmax evaluation records it), or all of its
    foreground). Returns the paths."""
    out_dir = Path(out_dir)
    written = []
    for vol in volumes:
        prob = probabilities[vol.name]
        if nifti:
            written.append(save_nifti(prob, vol.affine, out_dir / f"{vol.name}_prob.nii.gz"))
        if overlays:
            label, title = vol.label, vol.name
            if overlay_class:
                label = np.rint(np.asarray(vol.label)) == overlay_class["id"]
                title = f"{vol.name}: {overlay_class['name']}"
            written.append(save_overlay(vol.image, label, prob, out_dir / f"{vol.name}_overlay.png",
                                        threshold=threshold, title=title))
    return written


def predict_arrays(predict_fn: PredictFn, variables: Any, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Predictions for ``x`` in batches of exactly ``batch_size`` (the last one filled with repeats and cut off),
    so one compiled shape serves every batch."""
    jitted = jax.jit(predict_fn)
    outs = []
    n = len(x)
    for i in range(0, n, batch_size):
        chunk = x[i : i + batch_size]
        real = len(chunk)
        if real < batch_size:
            chunk = np.concatenate([chunk, x[np.arange(batch_size - real) % n]])
        outs.append(np.asarray(jitted(variables, chunk))[:real])
    return np.concatenate(outs)


def evaluate_segmentation_arrays(
    predict_fn: PredictFn, variables: Any, x: np.ndarray, y: np.ndarray, batch_size: int,
    metrics: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Crops (the published NCS test set): the ``metrics`` streamed over batches, plus Dice and IoU at 0.5."""
    collected = Collected()
    probs = predict_arrays(predict_fn, variables, x, batch_size)
    for i in range(0, len(x), batch_size):
        collected.add_segmentation(y[i : i + batch_size], probs[i : i + batch_size])
    overlap = compute_metrics(("dice", "iou"), collected)
    return {"set": compute_metrics(metric_names("segmentation", metrics), collected), "mean": overlap}


def evaluate_classification(
    predict_fn: PredictFn, variables: Any, x: np.ndarray, y: np.ndarray, batch_size: int,
    metrics: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The ``metrics`` (default ROC AUC of the positive-class probability and accuracy at 0.5) over candidates,
    with their count and positives."""
    collected = Collected()
    collected.add_classification(y, predict_arrays(predict_fn, variables, x, batch_size))
    truth = collected.classification()[0]
    return {**compute_metrics(metric_names("classification", metrics), collected), "n": int(len(y)),
            "positives": int(np.sum(truth))}
