"""Normalisation and compact storage precision, cube extraction (vectorised == published loop), the phantom."""

import time

import numpy as np
import pytest

from genesis_jax.data.cubes import (CubeExtractionError, corner_bounds, extract_cubes, extract_cubes_published_loop,
                                    tissue_scores)
from genesis_jax.data.normalize import (MAX_QUANT_ERROR, denormalize_ct, dequantize_unit, normalize_ct, normalize_mr,
                                        quantize_unit)
from genesis_jax.data.phantom import LABELS, synthetic_ct


def test_normalize_ct_clips_to_window():
    hu = np.array([-3000.0, -1000.0, -150.0, 0.0, 1000.0, 3000.0])
    out = normalize_ct(hu)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.0, 0.425, 0.5, 1.0, 1.0], atol=1e-7)


def test_uint16_storage_loses_less_than_a_tenth_of_a_hounsfield_unit():
    hu = np.random.default_rng(0).uniform(-1000.0, 1000.0, size=200_000).astype(np.float32)
    stored = quantize_unit(normalize_ct(hu))
    assert stored.dtype == np.uint16 and stored.nbytes == hu.nbytes // 2
    back = denormalize_ct(dequantize_unit(stored))
    err = np.abs(back.astype(np.float64) - hu)
    assert err.max() <= MAX_QUANT_ERROR * 2000 + 1e-3  # 0.0153 HU plus float32 rounding
    assert err.max() < 0.02  # far below 1 HU


def test_normalize_mr_minmax_and_percentile():
    x = np.concatenate([np.linspace(0, 100, 999), [10_000.0]]).astype(np.float32)
    mm = normalize_mr(x)
    assert mm.min() == 0 and mm.max() == 1 and mm[500] < 0.01  # the outlier squeezes min-max
    pc = normalize_mr(x, "percentile", 1, 99)
    assert pc.max() == 1 and 0.4 < pc[500] < 0.6
    assert np.all(normalize_mr(np.full(5, 3.0)) == 0)
    with pytest.raises(ValueError, match="method"):
        normalize_mr(x, "zscore")


@pytest.fixture(scope="module")
def phantom01():
    return normalize_ct(synthetic_ct((64, 64, 64), seed=3)["image"])


@pytest.mark.parametrize("seed", [0, 1])
def test_vectorised_extraction_equals_published_loop(phantom01, seed):
    kw = dict(cube_shape=(12, 10, 6), margins=(4, 5, 2), cubes_per_scan=5, max_attempts=60, seed=seed)
    fast, fast_corners = extract_cubes(phantom01, return_corners=True, chunk_size=7, **kw)
    slow, slow_corners = extract_cubes_published_loop(phantom01, return_corners=True, **kw)
    assert len(fast) > 0
    np.testing.assert_array_equal(fast_corners, slow_corners)
    np.testing.assert_array_equal(fast, slow)


def test_tissue_rule_rejects_solid_and_accepts_air_on_known_volumes():
    kw = dict(cube_shape=(8, 8, 4), margins=(2, 2, 1), cubes_per_scan=3, max_attempts=20)
    solid = np.full((20, 20, 16), 0.5, np.float32)  # all tissue (>= 0.425): every voxel scores 1
    assert len(extract_cubes(solid, **kw)) == 0
    air = np.zeros((20, 20, 16), np.float32)
    assert len(extract_cubes(air, **kw)) == 3
    # tissue only two slices ahead scores 0 (published quirk) -> accepted; one slice ahead scores 0.5 each
    vol = np.zeros((20, 20, 16), np.float32)
    vol[:, :, ::3] = 0.9
    windows = np.stack([vol[:8, :8, z:z + 4 + 2] for z in range(3)])
    np.testing.assert_allclose(tissue_scores(windows, 4, 0.425, 3), [8 * 8 * (1 + 0.5 + 0 + 1)] * 1
                               + [8 * 8 * (0 + 0.5 + 1 + 0)] + [8 * 8 * (0.5 + 1 + 0 + 0.5)])
    assert len(extract_cubes(vol, max_tissue_fraction=0.52, **kw)) == 3
    assert len(extract_cubes(vol, max_tissue_fraction=0.37, **kw)) == 0


def test_corners_respect_published_bounds(phantom01):
    cubes, corners = extract_cubes(phantom01, cube_shape=(16, 16, 8), margins=(6, 6, 3), cubes_per_scan=50,
                                   max_attempts=400, return_corners=True, max_tissue_fraction=1.0)
    low, high = corner_bounds(phantom01.shape, (16, 16, 8), (6, 6, 3), 3)
    np.testing.assert_array_equal(high, [64 - 16 - 1 - 6, 64 - 16 - 1 - 6, 64 - 8 - 3 - 1 - 3])
    assert np.all(corners >= low) and np.all(corners <= high) and len(cubes) == 50
    for cube, (x, y, z) in zip(cubes, corners):
        np.testing.assert_array_equal(cube, phantom01[x:x + 16, y:y + 16, z:z + 8])


def test_small_volume_and_bad_arguments_raise(phantom01):
    with pytest.raises(CubeExtractionError, match=r"smaller than the cube \(64, 64, 32\) plus margins"):
        extract_cubes(phantom01)
    with pytest.raises(CubeExtractionError, match="3D"):
        extract_cubes(phantom01[0])
    with pytest.raises(ValueError, match="criterion"):
        extract_cubes(phantom01, criterion="lungs", cube_shape=(8, 8, 4), margins=(1, 1, 1))


def test_foreground_criterion_and_determinism(phantom01):
    kw = dict(cube_shape=(16, 16, 8), margins=(2, 2, 2), criterion="foreground", foreground_threshold=0.3,
              min_foreground_fraction=0.9, cubes_per_scan=8, max_attempts=300)
    a = extract_cubes(phantom01, seed=5, **kw)
    assert len(a) == 8
    assert all((c > 0.3).mean() >= 0.9 for c in a)
    np.testing.assert_array_equal(a, extract_cubes(phantom01, seed=5, **kw))
    assert not np.array_equal(a, extract_cubes(phantom01, seed=6, **kw))


def test_phantom_is_deterministic_plausible_and_fast():
    start = time.perf_counter()
    ph = synthetic_ct((128, 128, 128), seed=0)
    assert time.perf_counter() - start < 3.0
    image, label = ph["image"], ph["label"]
    assert image.shape == label.shape == (128, 128, 128) and image.dtype == np.float32
    np.testing.assert_array_equal(image, synthetic_ct((128, 128, 128), seed=0)["image"])
    assert not np.array_equal(image, synthetic_ct((128, 128, 128), seed=1)["image"])
    median = {name: np.median(image[label == k]) for k, name in LABELS.items()}
    assert median["outside"] < -950 and -900 < median["lung"] < -800
    assert 30 < median["liver"] < 90 and median["bone"] > 300 and median["vessel"] > 100
    assert 0 < median["nodule"] < 80 and all((label == k).any() for k in LABELS)
    assert len(ph["spacing"]) == 3
    # the liver sits on the patient's right (high x in RAS) and below the lungs
    liver, lung = np.argwhere(label == 1).mean(0), np.argwhere(label == 2).mean(0)
    assert liver[0] > 64 and liver[2] < lung[2]
    small = synthetic_ct((24, 20, 16), seed=2)
    assert small["image"].shape == (24, 20, 16)
