"""Candidate pools: ids, context arrays around detections, and (for simulations only) the true labels.

A pool on disk is an ``.npz`` (``load_pool`` checks each rule with a one-line error naming the file and the key):
  ``ids``       (n,) unique strings (or integers), one per candidate;
  ``contexts``  (n, *spatial) or (n, *spatial, C) real numbers, 2 or 3 spatial axes, NORMALISED intensities in
                [0, 1] as every genesis_jax network reads them (CT: HU clipped to [-1000, 1000] and scaled,
                ``genesis_jax.data.normalize.normalize_ct``; MR: per-volume min-max). Raw HU or scanner values
                (anything outside [-1, 2]) are refused, and so are NaN/Inf;
  ``labels``    optional (n,) integers: an oracle for simulations; the human-in-the-loop commands never read them.
``dataset_pool`` makes a pool from a prepared dataset folder's volumes (:mod:`genesis_jax.data.folders`). ``synthetic_pool`` makes a 3D pool whose difficulty is known: rare positives (a ball at the centre), hard
negatives (an equally bright tube) and many easy negatives (background), and some contexts carry a bright
distractor outside the detection box that only enlarged or shifted patches see (the noisy patches that majority
selection is meant to ignore). ``matched_organ_pools`` cuts 2D organ-vs-organ candidates from one labelled CT;
``multi_scan_pools`` takes grid-spaced (spatially de-duplicated) 2D or 3D candidates from several scans with a set
share of positives and of intensity-matched hard negatives (the AL simulation's pool).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np


@dataclasses.dataclass
class CandidatePool:
    ids: np.ndarray  # (n,) str
    contexts: np.ndarray  # (n, *spatial, C) float32
    labels: np.ndarray | None = None  # (n,) int, oracle only

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids).astype(str)
        if len(set(self.ids.tolist())) != len(self.ids):
            raise ValueError("candidate ids must be unique")
        if len(self.contexts) != len(self.ids):
            raise ValueError(f"{len(self.ids)} ids but {len(self.contexts)} contexts")
        if self.labels is not None and len(self.labels) != len(self.ids):
            raise ValueError(f"{len(self.ids)} ids but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self) -> dict[str, int]:
        return {cid: i for i, cid in enumerate(self.ids.tolist())}


def save_pool(path: str | Path, pool: CandidatePool) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"ids": pool.ids, "contexts": pool.contexts}
    if pool.labels is not None:
        arrays["labels"] = pool.labels
    np.savez_compressed(path, **arrays)
    return path


def load_pool(path: str | Path, spatial_dims: int = 3) -> CandidatePool:
    """Read an ``.npz`` pool; a missing field or a wrong shape is an error naming the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such pool file")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"{path}: not a readable .npz pool ({err})") from None
    with data:
        for field in ("ids", "contexts"):
            if field not in data:
                raise ValueError(f"{path}: the pool has no {field!r} array (found {sorted(data.files)}); a pool "
                                 "holds 'ids' (n,), 'contexts' (n, *spatial[, C]) in [0, 1] and optionally 'labels'")
        ids, contexts = data["ids"], data["contexts"]
        labels = data["labels"] if "labels" in data else None
    if ids.ndim != 1 or ids.dtype.kind not in "USiu":
        raise ValueError(f"{path}: 'ids' must be a 1-D array of strings or integers, got {ids.dtype} {ids.shape}")
    if contexts.dtype.kind not in "fiub":
        raise ValueError(f"{path}: 'contexts' must hold real numbers, got dtype {contexts.dtype}")
    contexts = contexts.astype(np.float32)
    if contexts.size and not np.all(np.isfinite(contexts)):
        raise ValueError(f"{path}: 'contexts' hold NaN or Inf values")
    if contexts.size and (contexts.min() < -1.0 or contexts.max() > 2.0):
        raise ValueError(f"{path}: 'contexts' range over [{contexts.min():.4g}, {contexts.max():.4g}]: raw HU or "
                         "scanner values? contexts are normalised intensities in [0, 1] (CT: clip HU to [-1000, "
                         "1000], then (HU + 1000) / 2000)")
    if labels is not None:
        if labels.dtype.kind not in "iub" or labels.ndim != 1:
            raise ValueError(f"{path}: 'labels' must be a 1-D array of integers, got {labels.dtype} {labels.shape}")
        labels = labels.astype(np.int64)
    if contexts.ndim == spatial_dims + 1:
        contexts = contexts[..., None]
    if contexts.ndim != spatial_dims + 2:
        raise ValueError(
            f"{path}: 'contexts' has shape {contexts.shape}; expected (n, *spatial) or (n, *spatial, C) "
            f"with {spatial_dims} spatial axes"
        )
    try:
        return CandidatePool(ids, contexts, labels)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def _ball(shape: tuple[int, ...], centre: np.ndarray, radius: float) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    dist2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
    # soft edge one voxel wide so small radii still vary smoothly
    return np.clip(radius + 0.5 - np.sqrt(dist2), 0.0, 1.0)


def _tube(shape: tuple[int, ...], centre: np.ndarray, axis: int, radius: float) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    dist2 = sum((g - c) ** 2 for a, (g, c) in enumerate(zip(grids, centre)) if a != axis)
    return np.clip(radius + 0.5 - np.sqrt(dist2), 0.0, 1.0)


def synthetic_pool(
    n: int,
    context_size: int = 12,
    positive_fraction: float = 0.15,
    hard_fraction: float = 0.25,
    noise: float = 0.1,
    distractor_fraction: float = 0.3,
    seed: int = 0,
    prefix: str = "syn",
) -> CandidatePool:
    """n 3D candidates (context_size^3, one channel, values about [0, 1]) with known labels.

    Positives (``positive_fraction``): a solid ball (radius 1/8-1/4 of the context) at the centre. Hard negatives
    (``hard_fraction``): a tube through the centre along a random axis, as bright as the balls (contrast 0.15-0.5
    for both), so brightness alone does not rank them. The rest are easy negatives: background only. Every
    context has Gaussian noise and a random intensity gradient; ``distractor_fraction`` of them a bright ball in a
    corner, outside the detection box.
    """
    if not 0.0 < positive_fraction < 1.0 or not 0.0 <= hard_fraction <= 1.0 - positive_fraction:
        raise ValueError(
            f"need 0 < positive_fraction < 1 and 0 <= hard_fraction <= 1 - positive_fraction, "
            f"got {positive_fraction}, {hard_fraction}"
        )
    rng = np.random.default_rng(seed)
    shape = (context_size,) * 3
    centre = np.full(3, (context_size - 1) / 2.0)
    kind = rng.choice(3, size=n, p=[1.0 - positive_fraction - hard_fraction, positive_fraction, hard_fraction])
    grids = np.stack(np.meshgrid(*[np.linspace(-1, 1, context_size)] * 3, indexing="ij"))
    contexts = np.empty((n, *shape, 1), np.float32)
    for i in range(n):
        gradient = np.tensordot(rng.normal(0.0, 0.05, 3), grids, axes=1)
        image = 0.3 + gradient + rng.normal(0.0, noise, shape)
        contrast = rng.uniform(0.15, 0.5)
        jitter = centre + rng.uniform(-0.5, 0.5, 3)
        if kind[i] == 1:
            image += contrast * _ball(shape, jitter, context_size * rng.uniform(0.125, 0.25))
        elif kind[i] == 2:
            image += contrast * _tube(shape, jitter, int(rng.integers(3)), context_size * rng.uniform(0.07, 0.125))
        if rng.random() < distractor_fraction:
            corner = centre + rng.choice([-1.0, 1.0], 3) * (context_size / 2.0 - 1.0)
            image += rng.uniform(0.3, 0.6) * _ball(shape, corner, context_size / 8.0)
        contexts[i, ..., 0] = image
    ids = np.array([f"{prefix}{seed}-{i:06d}" for i in range(n)])
    return CandidatePool(ids, contexts, (kind == 1).astype(np.int64))


def organ_cube_pools(
    image01: np.ndarray,
    organ: np.ndarray,
    body: np.ndarray,
    n_pool: int,
    n_test: int,
    context_size: int = 12,
    box_size: int = 8,
    positive_fraction: float = 0.2,
    seed: int = 0,
    prefix: str = "ct",
) -> tuple[CandidatePool, CandidatePool]:
    """Organ vs non-organ candidate cubes of one volume: a pool and a test set from disjoint halves.

    image01: (X, Y, Z) intensities in [0, 1]; organ, body: boolean masks on the same grid. A candidate is a
    context_size^3 cube; it is positive when the organ fills at least half of its central box_size^3 (the
    detection box), negative when it lies in the body with less (so cubes across the organ's border are the hard
    ones). The volume is cut across the organ's longest extent at its median, and the two sides, kept one context
    apart so no voxel is shared, give the pool and the test set.
    """
    from scipy import ndimage

    from genesis_jax.data.patches import crop_centered

    if image01.shape != organ.shape or organ.shape != body.shape:
        raise ValueError(f"image {image01.shape}, organ {organ.shape} and body {body.shape} masks differ in shape")
    coords = np.argwhere(organ)
    if len(coords) == 0:
        raise ValueError("the organ mask is empty")
    axis = int(np.argmax(coords.max(0) - coords.min(0)))
    split = int(np.median(coords[:, axis]))
    fraction = ndimage.uniform_filter(organ.astype(np.float32), box_size, mode="constant")
    positive, negative = fraction >= 0.5, body & (fraction < 0.5)
    index = np.indices(organ.shape)[axis]
    half = context_size // 2 + 1
    rng = np.random.default_rng(seed)

    def make(side: np.ndarray, n: int, name: str) -> CandidatePool:
        n_pos = round(n * positive_fraction)
        chosen = []
        for mask, count in ((positive & side, n_pos), (negative & side, n - n_pos)):
            centres = np.argwhere(mask)
            if len(centres) < count:
                raise ValueError(f"only {len(centres)} candidate centres for {count} {name} cubes")
            chosen.append(centres[rng.choice(len(centres), count, replace=False)])
        centres = np.concatenate(chosen)
        labels = np.repeat([1, 0], [n_pos, n - n_pos])
        order = rng.permutation(n)
        contexts = np.stack([crop_centered(image01, c, (context_size,) * 3) for c in centres[order]])[..., None]
        ids = np.array([f"{prefix}-{name}-{'_'.join(map(str, c))}" for c in centres[order]])
        return CandidatePool(ids, contexts.astype(np.float32), labels[order])

    return make(index <= split - half, n_pool, "pool"), make(index >= split + half, n_test, "test")


def dataset_pool(
    volumes: Sequence[tuple[str, np.ndarray, np.ndarray]],
    n: int,
    context_size: int = 12,
    positive_fraction: float = 0.2,
    tissue_threshold: float = 0.3,
    seed: int = 0,
) -> CandidatePool:
    """Candidates from labelled volumes [(scan id, image in [0, 1], binary label)] (a prepared dataset folder's, read
    with ``genesis_jax.data.dataset_flag.labelled_volumes``): ``context_size``^3 contexts centred on label voxels
    (positives, ``positive_fraction`` of ``n``) and on other tissue (intensity above ``tissue_threshold``:
    negatives), spread evenly over the volumes; ``labels`` is the oracle of a simulation. Ids are
    ``<scan>@<x>_<y>_<z>`` (the centre voxel)."""
    from genesis_jax.data.patches import crop_centered

    if not volumes:
        raise ValueError("dataset_pool: no labelled volume")
    rng = np.random.default_rng(seed)
    n_pos = round(n * positive_fraction)
    picks: list[tuple[str, np.ndarray, np.ndarray, int]] = []
    for want, label_value in ((n_pos, 1), (n - n_pos, 0)):
        share = np.diff(np.linspace(0, want, len(volumes) + 1).round().astype(int))
        for (sid, image, label), count in zip(volumes, share):
            mask = label > 0 if label_value else (label == 0) & (image > tissue_threshold)
            centres = np.argwhere(mask)
            if len(centres) < count:
                raise ValueError(f"{sid}: only {len(centres)} {'label' if label_value else 'tissue'} voxels for "
                                 f"{count} candidates; lower config.pool.n")
            for centre in centres[rng.choice(len(centres), count, replace=False)]:
                picks.append((sid, image, centre, label_value))
    order = rng.permutation(len(picks))
    shape = (context_size,) * 3
    contexts = np.stack([crop_centered(picks[i][1], picks[i][2], shape) for i in order])[..., None]
    ids = np.array([f"{picks[i][0]}@{'_'.join(map(str, picks[i][2]))}" for i in order])
    return CandidatePool(ids, contexts.astype(np.float32), np.array([picks[i][3] for i in order], np.int64))


def box_mean_intensity(contexts: np.ndarray, box_size: int) -> np.ndarray:
    """(n,) mean intensity of each candidate's central detection box (box_size per spatial axis): the feature a
    raw-intensity classifier would use; its ROC AUC against the labels says how much intensity alone separates a
    pool."""
    spatial = contexts.shape[1:-1]
    sl = tuple(slice((s - box_size) // 2, (s - box_size) // 2 + box_size) for s in spatial)
    return contexts[(slice(None), *sl)].reshape(len(contexts), -1).mean(axis=1)


def matched_organ_pools(
    image01: np.ndarray,
    positive: np.ndarray,
    negative: np.ndarray,
    n_pool: int,
    n_test: int,
    context_size: int = 24,
    box_size: int = 12,
    positive_fraction: float = 0.3,
    bins: int = 16,
    block: int = 6,
    seed: int = 0,
    prefix: str = "ct2d",
) -> tuple[CandidatePool, CandidatePool]:
    """2D axial candidates of one volume, organ vs other organs of the same intensity: a pool and a test set.

    image01: (X, Y, Z) intensities in [0, 1]; positive: the target organ's mask; negative: the union of the other
    organs (e.g. spleen, kidneys, muscles vs liver). A candidate is a context_size^2 patch of one axial slice; it is
    positive when the target fills at least half of its central box_size^2 detection box, negative when the other
    organs do. Negatives are drawn with weights that give their box-mean intensity the positives' histogram
    (``bins`` bins over the positives' range), so brightness alone does not rank them. The axial slices are cut
    into blocks of ``block``: even blocks give the pool, the inner slices of odd blocks the test set (one slice
    apart at least, no shared slice; both halves span the whole organ, so the test set is not another anatomy).
    """
    from scipy import ndimage

    from genesis_jax.data.patches import crop_centered

    if not image01.shape == positive.shape == negative.shape or image01.ndim != 3:
        raise ValueError(f"image {image01.shape}, positive {positive.shape} and negative {negative.shape} must be "
                         "the same (X, Y, Z) grid")
    if not positive.any() or not negative.any():
        raise ValueError("the positive or the negative mask is empty")
    size = (box_size, box_size, 1)
    pos_frac = ndimage.uniform_filter(positive.astype(np.float32), size, mode="constant")
    neg_frac = ndimage.uniform_filter((negative & ~positive).astype(np.float32), size, mode="constant")
    box_mean = ndimage.uniform_filter(image01.astype(np.float32), size, mode="constant")
    half = context_size // 2
    inside = np.zeros(image01.shape, bool)
    inside[half:image01.shape[0] - half, half:image01.shape[1] - half, :] = True  # whole context in the slice
    is_pos, is_neg = inside & (pos_frac >= 0.5), inside & (neg_frac >= 0.5) & (pos_frac == 0)
    if block < 3:
        raise ValueError(f"block must be at least 3 slices, got {block}")
    z = np.indices(image01.shape)[2]
    in_pool, in_test = (z // block) % 2 == 0, ((z // block) % 2 == 1) & (z % block > 0) & (z % block < block - 1)
    rng = np.random.default_rng(seed)
    lo, hi = np.percentile(box_mean[is_pos], [1, 99])
    edges = np.linspace(lo, hi, bins + 1)

    def make(side: np.ndarray, n: int, name: str) -> CandidatePool:
        n_pos = round(n * positive_fraction)
        pos, neg = np.argwhere(is_pos & side), np.argwhere(is_neg & side)
        neg_values = box_mean[tuple(neg.T)]
        neg = neg[(neg_values >= lo) & (neg_values <= hi)]
        if len(pos) < n_pos or len(neg) < n - n_pos:
            raise ValueError(f"{name}: {len(pos)} positive and {len(neg)} intensity-matched negative centres for "
                             f"{n_pos} + {n - n_pos} candidates")
        pos = pos[rng.choice(len(pos), n_pos, replace=False)]
        p_hist = np.histogram(box_mean[tuple(pos.T)], edges)[0].astype(np.float64)
        n_bin = np.clip(np.digitize(box_mean[tuple(neg.T)], edges) - 1, 0, bins - 1)
        n_hist = np.bincount(n_bin, minlength=bins).astype(np.float64)
        weights = p_hist[n_bin] / np.maximum(n_hist[n_bin], 1.0)
        if np.count_nonzero(weights) < n - n_pos:
            raise ValueError(f"{name}: too few negatives in the positives' intensity range")
        neg = neg[rng.choice(len(neg), n - n_pos, replace=False, p=weights / weights.sum())]
        centres = np.concatenate([pos, neg])
        labels = np.repeat([1, 0], [n_pos, n - n_pos])
        order = rng.permutation(n)
        contexts = np.stack([crop_centered(image01[:, :, c[2]], c[:2], (context_size,) * 2) for c in centres[order]])
        ids = np.array([f"{prefix}-{name}-{'_'.join(map(str, c))}" for c in centres[order]])
        return CandidatePool(ids, contexts[..., None].astype(np.float32), labels[order])

    return make(in_pool, n_pool, "pool"), make(in_test, n_test, "test")


@dataclasses.dataclass(frozen=True)
class LabelledScan:
    """One scan for a multi-scan pool: ``image01`` (X, Y, Z) in [0, 1], the positive structure's mask and the
    mask where candidate centres may lie (e.g. the body); all on one grid."""

    name: str
    image01: np.ndarray
    positive: np.ndarray
    allowed: np.ndarray


def multi_scan_pools(
    scans: list[LabelledScan],
    n_pool: int,
    n_test: int,
    context_shape: tuple[int, ...],
    box_shape: tuple[int, ...],
    grid_step: int,
    positive_fraction: float = 0.08,
    hard_fraction: float = 0.5,
    block: int = 8,
    bins: int = 16,
    seed: int = 0,
    prefix: str = "scan",
) -> tuple[CandidatePool, CandidatePool]:
    """A pool and a test set of candidates from several scans: 2D axial (``context_shape`` of 2 axes) or 3D
    contexts centred on a regular grid of step ``grid_step`` voxels (spatial de-duplication: no two centres
    closer than that), positive when the centre lies in the positive mask.

    Each part holds ``round(n * positive_fraction)`` positives; of its negatives, ``hard_fraction`` are hard:
    drawn with weights that give their box-mean intensity (over ``box_shape`` around the centre) the positives'
    histogram (``bins`` bins over the positives' 1-99% range), so brightness alone does not rank them; the rest
    are drawn uniformly (the many easy negatives of a real detector's output). The pool takes the centres of even
    z blocks of ``block`` voxels, the test set those of odd blocks (the two never share a centre slice).
    """
    from scipy import ndimage

    from genesis_jax.data.patches import crop_centered

    nd = len(context_shape)
    if nd not in (2, 3) or len(box_shape) != nd:
        raise ValueError(f"context_shape {context_shape} and box_shape {box_shape} must both have 2 or 3 axes")
    if grid_step < 1 or block < 1 or not 0 < positive_fraction < 1 or not 0 <= hard_fraction <= 1:
        raise ValueError(f"grid_step={grid_step}, block={block} must be >= 1, positive_fraction="
                         f"{positive_fraction} in (0, 1), hard_fraction={hard_fraction} in [0, 1]")
    rows = []  # (scan index, x, y, z, label, box mean, side)
    for s, scan in enumerate(scans):
        if not scan.image01.shape == scan.positive.shape == scan.allowed.shape or scan.image01.ndim != 3:
            raise ValueError(f"{scan.name}: image {scan.image01.shape}, positive {scan.positive.shape} and allowed "
                             f"{scan.allowed.shape} must be one (X, Y, Z) grid")
        size = tuple(box_shape) + ((1,) if nd == 2 else ())
        box_mean = ndimage.uniform_filter(scan.image01.astype(np.float32), size, mode="constant")
        grid = np.stack(np.meshgrid(*[np.arange(grid_step // 2, n, grid_step) for n in scan.image01.shape],
                                    indexing="ij"), -1).reshape(-1, 3)
        grid = grid[scan.allowed[tuple(grid.T)]]
        side = (grid[:, 2] // block) % 2
        rows.append(np.column_stack([np.full(len(grid), s), grid, scan.positive[tuple(grid.T)],
                                     box_mean[tuple(grid.T)], side]))
    table = np.concatenate(rows)
    rng = np.random.default_rng(seed)
    pos_values = table[table[:, 4] == 1, 5]
    if not len(pos_values):
        raise ValueError("no grid centre lies in a positive mask")
    edges = np.linspace(*np.percentile(pos_values, [1, 99]), bins + 1)

    def make(side: int, n: int, name: str) -> CandidatePool:
        part = table[table[:, 6] == side]
        pos, neg = part[part[:, 4] == 1], part[part[:, 4] == 0]
        n_pos = round(n * positive_fraction)
        n_hard = round((n - n_pos) * hard_fraction)
        p_hist = np.histogram(pos[:, 5], edges)[0].astype(np.float64)
        n_bin = np.digitize(neg[:, 5], edges) - 1
        in_range = (n_bin >= 0) & (n_bin < bins)
        n_hist = np.bincount(n_bin[in_range], minlength=bins).astype(np.float64)
        weights = np.where(in_range, p_hist[np.clip(n_bin, 0, bins - 1)] / np.maximum(
            n_hist[np.clip(n_bin, 0, bins - 1)], 1.0), 0.0)
        if len(pos) < n_pos or np.count_nonzero(weights) < n_hard or len(neg) < n - n_pos:
            raise ValueError(f"{name}: {len(pos)} positive, {np.count_nonzero(weights)} intensity-matched and "
                             f"{len(neg)} negative grid centres for {n_pos} + {n_hard} hard + "
                             f"{n - n_pos - n_hard} easy candidates; lower n or grid_step")
        pos = pos[rng.choice(len(pos), n_pos, replace=False)]
        hard = rng.choice(len(neg), n_hard, replace=False, p=weights / weights.sum())
        rest = np.setdiff1d(np.arange(len(neg)), hard)
        easy = rng.choice(rest, n - n_pos - n_hard, replace=False)
        chosen = np.concatenate([pos, neg[hard], neg[easy]])[rng.permutation(n)]
        contexts, ids = [], []
        for s, x, y, z in chosen[:, :4].astype(np.int64):
            image = scans[s].image01
            contexts.append(crop_centered(image[:, :, z], (x, y), context_shape) if nd == 2
                            else crop_centered(image, (x, y, z), context_shape))
            ids.append(f"{prefix}-{name}-{scans[s].name}-{x}_{y}_{z}")
        return CandidatePool(np.array(ids), np.stack(contexts)[..., None].astype(np.float32),
                             chosen[:, 4].astype(np.int64))

    return make(0, n_pool, "pool"), make(1, n_test, "test")
