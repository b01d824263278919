"""Our NumPy port of the published Models Genesis deformations: the baseline that genesis_jax.transforms is measured
and checked against.

Written from the description of the published code (shared/reference/models_genesis.md §3: ModelsGenesis
`pytorch/utils.py` at 12f7feb), keeping its structure, constants, quirks and cost on purpose: Python-level loops
(10,000 shuffle windows), a 100,000-point Bezier curve with `np.interp`, per-sample float64 work. Decisions, sizes
and positions come from a Python `random.Random`, pixel shuffles and noise from a NumPy `RandomState`, as in the
published code (which uses the global instances of both; here they are explicit so runs can be seeded).

Arrays are (1, R, C, D) float64 in [0, 1] per sample, (B, 1, R, C, D) per batch, exactly as published. This module
is an experiment, not part of the package: nothing in genesis_jax imports it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from scipy.special import comb


@dataclass(frozen=True)
class PublishedConfig:
    """The published rates (pytorch/config.py == keras/config.py)."""

    flip_rate: float = 0.4
    local_rate: float = 0.5
    nonlinear_rate: float = 0.9
    paint_rate: float = 0.9
    outpaint_rate: float = 0.8
    num_windows: int = 10000

    @property
    def inpaint_rate(self) -> float:
        return 1.0 - self.outpaint_rate


class PublishedTransforms:
    """The published deformations with their own random streams (py: decisions/sizes/positions, np: shuffle/noise)."""

    def __init__(self, seed: int = 0, config: PublishedConfig = PublishedConfig()):
        self.py = random.Random(seed)
        self.np = np.random.RandomState(seed)
        self.config = config

    # -- flip (quirk kept: axis 0 is the singleton channel axis, the depth axis 3 is never flipped) --
    def data_augmentation(self, x: np.ndarray, y: np.ndarray, prob: float) -> tuple[np.ndarray, np.ndarray]:
        cnt = 3
        while self.py.random() < prob and cnt > 0:
            degree = self.py.choice([0, 1, 2])
            x = np.flip(x, axis=degree)
            y = np.flip(y, axis=degree)
            cnt -= 1
        return x, y

    # -- local pixel shuffling: windows read from the original, later windows overwrite earlier ones --
    def local_pixel_shuffling(self, x: np.ndarray, prob: float) -> np.ndarray:
        if self.py.random() >= prob:
            return x
        image_temp = x.copy()
        orig_image = x.copy()
        _, img_rows, img_cols, img_deps = x.shape
        for _ in range(self.config.num_windows):
            block_noise_size_x = self.py.randint(1, img_rows // 10)
            block_noise_size_y = self.py.randint(1, img_cols // 10)
            block_noise_size_z = self.py.randint(1, img_deps // 10)
            noise_x = self.py.randint(0, img_rows - block_noise_size_x)
            noise_y = self.py.randint(0, img_cols - block_noise_size_y)
            noise_z = self.py.randint(0, img_deps - block_noise_size_z)
            window = orig_image[
                0,
                noise_x : noise_x + block_noise_size_x,
                noise_y : noise_y + block_noise_size_y,
                noise_z : noise_z + block_noise_size_z,
            ]
            window = window.flatten()
            self.np.shuffle(window)
            window = window.reshape((block_noise_size_x, block_noise_size_y, block_noise_size_z))
            image_temp[
                0,
                noise_x : noise_x + block_noise_size_x,
                noise_y : noise_y + block_noise_size_y,
                noise_z : noise_z + block_noise_size_z,
            ] = window
        return image_temp

    # -- non-linear intensity map: reversed-Bernstein cubic Bezier, 100,000 points, half of the maps decreasing --
    @staticmethod
    def bernstein_poly(i: int, n: int, t: np.ndarray) -> np.ndarray:
        return comb(n, i) * (t ** (n - i)) * (1 - t) ** i

    def bezier_curve(self, points: list[list[float]], n_times: int = 100000) -> tuple[np.ndarray, np.ndarray]:
        n_points = len(points)
        x_points = np.array([p[0] for p in points])
        y_points = np.array([p[1] for p in points])
        t = np.linspace(0.0, 1.0, n_times)
        polynomial_array = np.array([self.bernstein_poly(i, n_points - 1, t) for i in range(n_points)])
        xvals = np.dot(x_points, polynomial_array)
        yvals = np.dot(y_points, polynomial_array)
        return xvals, yvals

    def nonlinear_transformation(self, x: np.ndarray, prob: float) -> np.ndarray:
        if self.py.random() >= prob:
            return x
        points = [[0, 0], [self.py.random(), self.py.random()], [self.py.random(), self.py.random()], [1, 1]]
        xvals, yvals = self.bezier_curve(points, n_times=100000)
        if self.py.random() < 0.5:
            xvals = np.sort(xvals)  # yvals left in curve order: a decreasing map
        else:
            xvals, yvals = np.sort(xvals), np.sort(yvals)
        return np.interp(x, xvals, yvals)

    # -- in-painting: up to 5 boxes of U[0,1) noise, 3-voxel margins --
    def image_in_painting(self, x: np.ndarray) -> np.ndarray:
        _, img_rows, img_cols, img_deps = x.shape
        cnt = 5
        while cnt > 0 and self.py.random() < 0.95:
            block_noise_size_x = self.py.randint(img_rows // 6, img_rows // 3)
            block_noise_size_y = self.py.randint(img_cols // 6, img_cols // 3)
            block_noise_size_z = self.py.randint(img_deps // 6, img_deps // 3)
            noise_x = self.py.randint(3, img_rows - block_noise_size_x - 3)
            noise_y = self.py.randint(3, img_cols - block_noise_size_y - 3)
            noise_z = self.py.randint(3, img_deps - block_noise_size_z - 3)
            x[
                :,
                noise_x : noise_x + block_noise_size_x,
                noise_y : noise_y + block_noise_size_y,
                noise_z : noise_z + block_noise_size_z,
            ] = self.np.rand(block_noise_size_x, block_noise_size_y, block_noise_size_z) * 1.0
            cnt -= 1
        return x

    # -- out-painting: noise everywhere, then 1 to 5 windows of the original restored --
    def _outpaint_box(self, img_rows: int, img_cols: int, img_deps: int) -> tuple[slice, slice, slice]:
        block_noise_size_x = img_rows - self.py.randint(3 * img_rows // 7, 4 * img_rows // 7)
        block_noise_size_y = img_cols - self.py.randint(3 * img_cols // 7, 4 * img_cols // 7)
        block_noise_size_z = img_deps - self.py.randint(3 * img_deps // 7, 4 * img_deps // 7)
        noise_x = self.py.randint(3, img_rows - block_noise_size_x - 3)
        noise_y = self.py.randint(3, img_cols - block_noise_size_y - 3)
        noise_z = self.py.randint(3, img_deps - block_noise_size_z - 3)
        return (
            slice(noise_x, noise_x + block_noise_size_x),
            slice(noise_y, noise_y + block_noise_size_y),
            slice(noise_z, noise_z + block_noise_size_z),
        )

    def image_out_painting(self, x: np.ndarray) -> np.ndarray:
        _, img_rows, img_cols, img_deps = x.shape
        image_temp = x.copy()
        x = self.np.rand(*x.shape) * 1.0
        sx, sy, sz = self._outpaint_box(img_rows, img_cols, img_deps)
        x[:, sx, sy, sz] = image_temp[:, sx, sy, sz]
        cnt = 4
        while cnt > 0 and self.py.random() < 0.95:
            sx, sy, sz = self._outpaint_box(img_rows, img_cols, img_deps)
            x[:, sx, sy, sz] = image_temp[:, sx, sy, sz]
            cnt -= 1
        return x

    # -- the composition, per sample, in the published order --
    def transform_sample(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        x, y = self.data_augmentation(x, y, c.flip_rate)
        x = self.local_pixel_shuffling(x, prob=c.local_rate)
        x = self.nonlinear_transformation(x, c.nonlinear_rate)
        if self.py.random() < c.paint_rate:
            if self.py.random() < c.inpaint_rate:
                x = self.image_in_painting(x)
            else:
                x = self.image_out_painting(x)
        return x, y

    def generate_batch(self, img: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """One batch of the published infinite generator: B distinct cubes drawn at random, then deformed."""
        index = list(range(img.shape[0]))
        self.py.shuffle(index)
        y = img[index[:batch_size]]
        x = y.copy()
        for n in range(batch_size):
            x[n] = y[n].copy()
            x[n], y[n] = self.transform_sample(x[n], y[n])
        return x, y


def generate_pair(img: np.ndarray, batch_size: int, config: PublishedConfig = PublishedConfig(), seed: int = 0):
    """The published infinite (input, target) generator over cubes `img` of shape (N, 1, R, C, D)."""
    transforms = PublishedTransforms(seed, config)
    while True:
        yield transforms.generate_batch(img, batch_size)
