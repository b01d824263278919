"""Models Genesis sub-volume ("cube") extraction: the published rule, vectorised, and a per-voxel port of it.

The published rule (models_genesis.md section 2), on a volume already normalised to [0, 1]:
  draw up to ``max_attempts`` corners uniformly with margins (x, y in [m_xy, X - c_x - 1 - m_xy],
  z in [m_z, Z - c_z - L - 1 - m_z], inclusive; L = ``depth_lookahead``);
  for each voxel of the candidate cube, k* = the first k < L with tissue (>= ``tissue_threshold``) at depth d + k,
  else L - 1; the voxel's score is 1 - k* / (L - 1);
  reject the cube when the summed score exceeds ``max_tissue_fraction`` * cube voxels (mostly solid tissue),
  accept otherwise, until ``cubes_per_scan`` cubes are accepted.
As published, "tissue only at d + L - 1" and "no tissue" both score 0: reproduced as is.

``extract_cubes`` thresholds the candidates' region once, then scores candidates in chunks of gathered boolean
windows (candidates are drawn up front, so chunking does not change which cubes are accepted); the per-voxel score
is rewritten as
  score = (1 / (L - 1)) * sum_{m=1}^{L-1} any(tissue at d .. d + m - 1),
which equals 1 - k*/(L - 1) exactly. ``extract_cubes_published_loop`` is the per-voxel Python loop the published
script runs, used by the tests (equality) and by experiments/bench_data.py (speed). Both draw the same candidate
corners from ``candidate_corners`` so, for one seed, they accept exactly the same cubes.

``criterion='foreground'`` replaces the tissue test by a plain foreground test for MR or other anatomy: accept when
at least ``min_foreground_fraction`` of the cube's voxels exceed ``foreground_threshold``.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np


class CubeExtractionError(ValueError):
    """The volume cannot give cubes with these settings (e.g. smaller than the cube plus its margins)."""


def _lookahead(criterion: str, depth_lookahead: int) -> int:
    if criterion == "tissue":
        if depth_lookahead < 2:
            raise ValueError(f"depth_lookahead must be >= 2 for the tissue criterion, got {depth_lookahead}")
        return depth_lookahead
    if criterion == "foreground":
        return 0
    raise ValueError(f"criterion must be 'tissue' or 'foreground', got {criterion!r}")


def corner_bounds(volume_shape: Sequence[int], cube_shape: Sequence[int], margins: Sequence[int],
                  lookahead: int) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive (low, high) bounds of cube corners, as in the published script; raises when the range is empty."""
    shape, cube, margin = (np.asarray(v, dtype=np.int64) for v in (volume_shape, cube_shape, margins))
    extra = np.array([0, 0, lookahead], dtype=np.int64)
    low = margin
    high = shape - cube - extra - 1 - margin
    if np.any(high < low):
        need = tuple(int(v) for v in cube + extra + 1 + 2 * margin)
        raise CubeExtractionError(f"volume of shape {tuple(int(s) for s in shape)} is smaller than the cube "
                                  f"{tuple(int(c) for c in cube)} plus margins {tuple(int(m) for m in margin)} "
                                  f"(needs at least {need} voxels)")
    return low, high


def fitted_margins(volume_shape: Sequence[int], cube_shape: Sequence[int], margins: Sequence[int],
                   lookahead: int) -> tuple[int, int, int]:
    """``margins`` shrunk (per axis, never grown) so that the corner range of the published rule is not empty:
    at most half of what the volume leaves around the cube. A volume smaller than the cube itself keeps its margins
    (``corner_bounds`` then raises)."""
    shape, cube = np.asarray(volume_shape, np.int64), np.asarray(cube_shape, np.int64)
    room = shape - cube - np.array([0, 0, lookahead], np.int64) - 1
    fitted = np.where(room >= 0, np.minimum(np.asarray(margins, np.int64), np.maximum(room, 0) // 2), margins)
    return tuple(int(m) for m in fitted)  # type: ignore[return-value]


def candidate_corners(volume_shape: Sequence[int], *, cube_shape: Sequence[int], margins: Sequence[int],
                      lookahead: int, max_attempts: int, seed: int) -> np.ndarray:
    """(max_attempts, 3) int64 candidate corners drawn uniformly within the bounds; deterministic for ``seed``."""
    low, high = corner_bounds(volume_shape, cube_shape, margins, lookahead)
    rng = np.random.default_rng(seed)
    return rng.integers(low, high + 1, size=(max_attempts, 3))


def _check_volume(volume01: np.ndarray) -> np.ndarray:
    volume01 = np.asarray(volume01)
    if volume01.ndim != 3:
        raise CubeExtractionError(f"a 3D volume is needed, got shape {volume01.shape}")
    if volume01.dtype.kind != "f":
        raise CubeExtractionError(f"a normalised float volume in [0, 1] is needed, got dtype {volume01.dtype}")
    return volume01


def tissue_scores(windows: np.ndarray, cube_depth: int, tissue_threshold: float, depth_lookahead: int) -> np.ndarray:
    """Published tissue score of each window; windows: (n, cx, cy, cube_depth + depth_lookahead - 1), float or
    already thresholded (bool)."""
    tissue = windows if windows.dtype == bool else windows >= tissue_threshold
    # m = 1: tissue at depth d itself; counted on the whole (contiguous) window minus its look-ahead tail, which
    # np.count_nonzero does much faster than a strided slice.
    count = np.array([np.count_nonzero(t) - np.count_nonzero(t[..., cube_depth:]) for t in tissue], dtype=np.int64)
    found = None
    for m in range(2, depth_lookahead):
        step = tissue[..., m - 1: m - 1 + cube_depth]
        found = np.bitwise_or(tissue[..., :cube_depth], step) if found is None else np.bitwise_or(found, step, out=found)
        count += np.array([np.count_nonzero(f) for f in found], dtype=np.int64)
    return count / (depth_lookahead - 1)


def extract_cubes(
    volume01: np.ndarray,
    *,
    cube_shape: Sequence[int] = (64, 64, 32),
    margins: Sequence[int] = (100, 100, 30),
    tissue_threshold: float = 0.425,
    max_tissue_fraction: float = 0.15,
    depth_lookahead: int = 3,
    cubes_per_scan: int = 32,
    max_attempts: int = 1600,
    seed: int = 0,
    criterion: Literal["tissue", "foreground"] = "tissue",
    foreground_threshold: float = 0.05,
    min_foreground_fraction: float = 0.5,
    chunk_size: int = 32,
    return_corners: bool = False,
    adapt_margins: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Extract up to ``cubes_per_scan`` cubes (n, cx, cy, cz) from a [0, 1] volume with the published rule.

    Returns fewer cubes when ``max_attempts`` candidates do not give enough (possibly zero: shape (0, cx, cy, cz)).
    With ``return_corners`` also returns the (n, 3) corners. Raises CubeExtractionError when the volume is smaller
    than the cube plus margins; ``adapt_margins`` shrinks the margins of such a volume to fit (``fitted_margins``),
    so only a volume smaller than the cube itself raises.
    """
    volume01 = _check_volume(volume01)
    lookahead = _lookahead(criterion, depth_lookahead)
    cube = tuple(int(c) for c in cube_shape)
    if adapt_margins:
        margins = fitted_margins(volume01.shape, cube, margins, lookahead)
    corners = candidate_corners(volume01.shape, cube_shape=cube, margins=margins, lookahead=lookahead,
                                max_attempts=max_attempts, seed=seed)
    window_shape = (cube[0], cube[1], cube[2] + max(lookahead - 1, 0))
    # Threshold once, only where candidate windows can reach; windows are then gathered as bytes, not floats.
    low = corners.min(axis=0)
    high = corners.max(axis=0) + window_shape
    region = volume01[low[0]:high[0], low[1]:high[1], low[2]:high[2]]
    mask = region >= tissue_threshold if criterion == "tissue" else region > foreground_threshold
    views = np.lib.stride_tricks.sliding_window_view(mask, window_shape)
    local = corners - low
    limit = max_tissue_fraction * float(np.prod(cube))
    accepted: list[np.ndarray] = []
    start = 0
    while start < max_attempts and len(accepted) < cubes_per_scan:
        chunk = slice(start, start + chunk_size)
        start += chunk_size
        windows = views[local[chunk, 0], local[chunk, 1], local[chunk, 2]]  # one gather: (n, wx, wy, wz) bool
        if criterion == "tissue":
            ok = tissue_scores(windows, cube[2], tissue_threshold, lookahead) <= limit
        else:
            fraction = np.array([np.count_nonzero(w) for w in windows]) / float(np.prod(cube))
            ok = fraction >= min_foreground_fraction
        accepted.extend(corners[chunk][ok][: cubes_per_scan - len(accepted)])
    accepted_corners = np.asarray(accepted, dtype=np.int64).reshape(-1, 3)
    cubes = np.empty((len(accepted_corners), *cube), dtype=volume01.dtype)
    for i, (x, y, z) in enumerate(accepted_corners):
        cubes[i] = volume01[x:x + cube[0], y:y + cube[1], z:z + cube[2]]
    return (cubes, accepted_corners) if return_corners else cubes


PUBLISHED_RULE = dict(cube_shape=(64, 64, 32), margins=(100, 100, 30), tissue_threshold=0.425,
                      max_tissue_fraction=0.15, depth_lookahead=3, cubes_per_scan=32, max_attempts=1600)


def extract_cubes_published_loop(volume01: np.ndarray, *, seed: int = 0, return_corners: bool = False,
                                 **rule) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Reference: the published per-voxel Python loop (tissue criterion), written from its description.

    ``rule`` overrides entries of ``PUBLISHED_RULE`` (the same names as ``extract_cubes``' arguments). Slow on
    purpose (it is the baseline of experiments/bench_data.py); shares ``candidate_corners`` with ``extract_cubes``
    so both accept the same cubes for a seed.
    """
    unknown = set(rule) - set(PUBLISHED_RULE)
    if unknown:
        raise TypeError(f"extract_cubes_published_loop: unknown argument(s) {sorted(unknown)}")
    rule = {**PUBLISHED_RULE, **rule}
    cube_shape, margins, max_attempts = rule["cube_shape"], rule["margins"], rule["max_attempts"]
    tissue_threshold, depth_lookahead = rule["tissue_threshold"], rule["depth_lookahead"]
    max_tissue_fraction, cubes_per_scan = rule["max_tissue_fraction"], rule["cubes_per_scan"]
    volume01 = _check_volume(volume01)
    cx, cy, cz = (int(c) for c in cube_shape)
    corners = candidate_corners(volume01.shape, cube_shape=(cx, cy, cz), margins=margins, lookahead=depth_lookahead,
                                max_attempts=max_attempts, seed=seed)
    limit = max_tissue_fraction * cx * cy * cz
    cubes, kept = [], []
    for sx, sy, sz in corners.tolist():
        if len(cubes) >= cubes_per_scan:
            break
        window = volume01[sx:sx + cx, sy:sy + cy, sz:sz + cz + depth_lookahead]
        depth_img = np.zeros((cx, cy, cz))
        for i in range(cx):
            for j in range(cy):
                for d in range(cz):
                    for k in range(depth_lookahead):
                        if window[i, j, d + k] >= tissue_threshold or k == depth_lookahead - 1:
                            depth_img[i, j, d] = k
                            break
        depth_img = 1.0 - depth_img / (depth_lookahead - 1)
        if np.sum(depth_img) > limit:
            continue
        cubes.append(window[:, :, :cz].copy())
        kept.append((sx, sy, sz))
    out = np.asarray(cubes, dtype=volume01.dtype).reshape(-1, cx, cy, cz)
    return (out, np.asarray(kept, dtype=np.int64).reshape(-1, 3)) if return_corners else out
