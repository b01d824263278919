"""Our NumPy port of the published pipeline (the benchmark baseline) reproduces the published statistics."""

import numpy as np

from experiments.published_numpy_transforms import PublishedConfig, PublishedTransforms


def test_port_reproduces_published_statistics():
    t = PublishedTransforms(seed=0)
    cube = np.random.default_rng(0).random((1, 64, 64, 32))
    inpainted = [np.mean(t.image_in_painting(cube.copy() * 0 - 1) >= 0) for _ in range(400)]
    assert abs(np.mean(inpainted) - 0.056) < 0.005  # published: mean 0.056, sd 0.021
    kept = [np.mean(t.image_out_painting(cube * 0 - 1) < 0) for _ in range(200)]
    assert abs(np.mean(kept) - 0.317) < 0.015  # published: mean 0.317, sd 0.063
    ramp = np.arange(64 * 64 * 32, dtype=np.float64).reshape(1, 64, 64, 32)
    changed = np.mean(t.local_pixel_shuffling(ramp, prob=1.0) != ramp)
    assert abs(changed - 0.784) < 0.01  # published: 0.784, sd 0.003


def test_port_batches_flip_quirk_and_rates():
    t = PublishedTransforms(seed=1, config=PublishedConfig(num_windows=50))
    img = np.random.default_rng(1).random((8, 1, 32, 32, 16))  # published constants need axes >= 14
    identical, depth_flipped = 0, 0
    for _ in range(40):
        x, y = t.generate_batch(img, 4)
        assert x.shape == y.shape == (4, 1, 32, 32, 16) and x.min() >= 0 and x.max() <= 1
        for target in y:
            flips = [np.array_equal(target, np.flip(c, axes)) for c in img for axes in [(), (1,), (2,), (1, 2)]]
            depth_flipped += not any(flips)  # the published draw never flips the depth axis
        identical += int(np.sum([np.array_equal(a, b) for a, b in zip(x, y)]))
    assert depth_flipped == 0
    assert identical <= 6  # P(x == y) = 0.005 over 160 pairs
