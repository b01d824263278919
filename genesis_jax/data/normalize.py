"""Intensity normalisation to [0, 1] and the compact uint16 storage of [0, 1] intensities.

CT (published): clip HU to [hu_min, hu_max] = [-1000, 1000], then map linearly to [0, 1].
MR (published for BraTS): per-volume min-max; a percentile variant ignores outliers.

Storage: the published cubes were float64 (1 MiB per 64x64x32 cube, about 20 GiB for LUNA16 in RAM). Here a [0, 1]
value v is stored as round(v * 65535) in uint16 (256 KiB per cube: 4x smaller than float64, 2x smaller than
float32). The round trip error is at most 0.5 / 65535 = 7.6e-6 of the window, i.e. at most 0.0153 HU for the
2000 HU CT window: far below the 1 HU resolution of CT scanners. tests/data/test_normalize.py checks this bound.
"""

from __future__ import annotations

import numpy as np

QUANT_LEVELS = 65535
MAX_QUANT_ERROR = 0.5 / QUANT_LEVELS  # in [0, 1] units


def normalize_ct(hu: np.ndarray, hu_min: float = -1000.0, hu_max: float = 1000.0) -> np.ndarray:
    """Clip HU to [hu_min, hu_max] and map to float32 [0, 1]."""
    if not hu_max > hu_min:
        raise ValueError(f"normalize_ct: hu_max ({hu_max}) must exceed hu_min ({hu_min})")
    out = (np.asarray(hu, dtype=np.float32) - np.float32(hu_min)) / np.float32(hu_max - hu_min)
    return np.clip(out, 0.0, 1.0, out=out)


def denormalize_ct(x01: np.ndarray, hu_min: float = -1000.0, hu_max: float = 1000.0) -> np.ndarray:
    """Inverse of normalize_ct inside the window (float32 HU)."""
    return np.asarray(x01, dtype=np.float32) * np.float32(hu_max - hu_min) + np.float32(hu_min)


def normalize_mr(image: np.ndarray, method: str = "minmax", lower: float = 0.5, upper: float = 99.5,
                 mask: np.ndarray | None = None) -> np.ndarray:
    """Per-volume MR normalisation to float32 [0, 1].

    method='minmax': (x - min) / (max - min) (the published BraTS recipe);
    method='percentile': the same between the ``lower`` and ``upper`` percentiles, clipped.
    ``mask`` restricts the statistics to a region (e.g. the head); a constant volume maps to zeros.
    """
    x = np.asarray(image, dtype=np.float32)
    values = x[mask] if mask is not None else x
    if values.size == 0:
        raise ValueError("normalize_mr: the mask selects no voxel")
    if method == "minmax":
        lo, hi = float(values.min()), float(values.max())
    elif method == "percentile":
        lo, hi = (float(v) for v in np.percentile(values, [lower, upper]))
    else:
        raise ValueError(f"normalize_mr: method must be 'minmax' or 'percentile', got {method!r}")
    if hi <= lo:
        return np.zeros_like(x)
    return np.clip((x - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0)


def normalize_volume(image: np.ndarray, modality: str, *, hu_min: float = -1000.0, hu_max: float = 1000.0,
                     mr_method: str = "minmax", mr_percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """normalize_ct for modality 'ct', normalize_mr for 'mr'."""
    if modality == "ct":
        return normalize_ct(image, hu_min, hu_max)
    if modality == "mr":
        return normalize_mr(image, mr_method, *mr_percentiles)
    raise ValueError(f"modality must be 'ct' or 'mr', got {modality!r}")


def quantize_unit(x01: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint16 (values outside [0, 1] are clipped)."""
    x = np.clip(np.asarray(x01, dtype=np.float32), 0.0, 1.0)
    return np.rint(x * np.float32(QUANT_LEVELS)).astype(np.uint16)


def dequantize_unit(q: np.ndarray) -> np.ndarray:
    """uint16 -> float32 [0, 1]."""
    return np.asarray(q, dtype=np.float32) * np.float32(1.0 / QUANT_LEVELS)
