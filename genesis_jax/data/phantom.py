"""A deterministic synthetic chest/abdomen CT phantom with labels, for tests and fully offline runs.

``synthetic_ct(shape, seed)`` draws, in canonical RAS voxel order (x towards the patient's right, y anterior,
z superior), an elliptic body (fat rim around soft tissue), two lungs (-850 HU) in the upper part, a heart, a
contrast-filled aorta and branching lung vessels, the spine and ribs (bone), a liver (60 HU) under the right lung,
and a few solid nodules (30 HU) in the lungs, plus Gaussian noise, rounded to integer HU as a scanner stores them. Geometry is defined in normalised coordinates
([-1, 1] per axis), so any shape works; the random parts (jitter, vessels, nodules, noise) come from ``seed``.
Everything is array arithmetic on open grids: 128^3 takes well under a second.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

LABELS = {0: "outside", 1: "liver", 2: "lung", 3: "bone", 4: "vessel", 5: "nodule", 6: "soft_tissue"}
LIVER, LUNG, BONE, VESSEL, NODULE, SOFT_TISSUE = 1, 2, 3, 4, 5, 6
HU = {"air": -1000.0, "lung": -850.0, "fat": -100.0, "soft": 40.0, "heart": 50.0, "liver": 60.0,
      "vessel": 180.0, "lung_vessel": 40.0, "cancellous": 250.0, "bone": 800.0, "nodule": 30.0}
FIELD_OF_VIEW_MM = (360.0, 360.0, 320.0)


def _ellipsoid(u, v, w, centre, radii) -> np.ndarray:
    return (((u - centre[0]) / radii[0]) ** 2 + ((v - centre[1]) / radii[1]) ** 2
            + ((w - centre[2]) / radii[2]) ** 2) <= 1.0


def _tube(shape, start, end, radius) -> tuple[tuple[slice, ...], np.ndarray]:
    """Voxels within ``radius`` (normalised units) of the segment start-end, on the segment's bounding box."""
    start, end = np.asarray(start, np.float32), np.asarray(end, np.float32)
    lo = np.minimum(start, end) - radius
    hi = np.maximum(start, end) + radius
    n = np.asarray(shape)
    i0 = np.clip(np.floor((lo + 1) / 2 * n).astype(int), 0, n - 1)
    i1 = np.clip(np.ceil((hi + 1) / 2 * n).astype(int) + 1, 1, n)
    box = tuple(slice(a, b) for a, b in zip(i0, i1))
    u, v, w = ((np.arange(a, b, dtype=np.float32) + 0.5) / s * 2 - 1 for a, b, s in zip(i0, i1, n))
    p = np.stack(np.broadcast_arrays(u[:, None, None], v[None, :, None], w[None, None, :]), axis=-1)
    d = end - start
    t = np.clip(((p - start) @ d) / max(float(d @ d), 1e-12), 0.0, 1.0)
    dist2 = ((p - start - t[..., None] * d) ** 2).sum(-1)
    return box, dist2 <= radius ** 2


def synthetic_ct(shape: Sequence[int] = (128, 128, 128), seed: int = 0) -> dict:
    """Return dict(image=float32 HU (X, Y, Z), label=uint8 (X, Y, Z) with ``LABELS`` ids, spacing=(sx, sy, sz) mm)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"synthetic_ct: shape must be 3 sizes >= 8, got {shape}")
    rng = np.random.default_rng(seed)
    u, v, w = ((np.arange(n, dtype=np.float32) + 0.5) / n * 2 - 1 for n in shape)
    u, v, w = u[:, None, None], v[None, :, None], w[None, None, :]
    jitter = lambda scale: float(rng.uniform(-scale, scale))  # noqa: E731

    image = np.full(shape, HU["air"], dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)

    def paint(mask, hu, cls):
        image[mask] = hu
        label[mask] = cls

    body_radii = (0.86 + jitter(0.04), 0.62 + jitter(0.04))
    body_r = (u / body_radii[0]) ** 2 + (v / body_radii[1]) ** 2
    body = np.broadcast_to(body_r <= 1.0, shape)
    paint(body, HU["fat"], SOFT_TISSUE)
    paint(np.broadcast_to(body_r <= 0.82, shape), HU["soft"], SOFT_TISSUE)

    lung_w = 0.38 + jitter(0.05)
    lungs = [_ellipsoid(u, v, w, (side * (0.37 + jitter(0.02)), 0.04, lung_w), (0.31, 0.46, 0.60))
             for side in (1.0, -1.0)]
    lungs = np.logical_or(*lungs)
    paint(lungs, HU["lung"], LUNG)
    heart = _ellipsoid(u, v, w, (-0.10 + jitter(0.03), 0.18, 0.10 + jitter(0.05)), (0.22, 0.22, 0.24))
    paint(heart, HU["heart"], SOFT_TISSUE)
    # Liver: under the right lung (+x), bulging up into the diaphragm dome.
    liver = _ellipsoid(u, v, w, (0.33 + jitter(0.04), 0.04, -0.33 + jitter(0.05)), (0.36, 0.38, 0.30)) & ~lungs
    paint(liver, HU["liver"], LIVER)

    # Aorta along z, left of the spine; lung vessels as random tubes branching from each hilum.
    aorta = np.broadcast_to(((u + 0.10) / 0.065) ** 2 + ((v + 0.28) / 0.065) ** 2 <= 1.0, shape)
    paint(aorta, HU["vessel"], VESSEL)
    for side in (1.0, -1.0):
        hilum = np.array([side * 0.20, 0.05, lung_w - 0.05])
        for _ in range(6):
            end = hilum + np.array([side * rng.uniform(0.1, 0.35), rng.uniform(-0.3, 0.3), rng.uniform(-0.45, 0.45)])
            box, tube = _tube(shape, hilum, end, float(rng.uniform(0.012, 0.025)))
            tube &= lungs[box]
            image[box][tube] = HU["lung_vessel"]
            label[box][tube] = VESSEL

    # Spine: vertebral bodies (cortical rim, cancellous core) separated by discs; ribs as elliptic rings.
    spine_r = ((u / 0.10) ** 2 + ((v + 0.45) / 0.10) ** 2)
    disc = np.broadcast_to(np.sin(w * np.pi * 7.0 + jitter(1.0)) > 0.85, shape)
    vertebra = np.broadcast_to(spine_r <= 1.0, shape) & ~disc
    paint(vertebra, HU["bone"], BONE)
    paint(vertebra & np.broadcast_to(spine_r <= 0.55, shape), HU["cancellous"], BONE)
    paint(np.broadcast_to(spine_r <= 1.0, shape) & disc, HU["soft"] + 40.0, SOFT_TISSUE)
    ring = np.broadcast_to((body_r >= 0.70) & (body_r <= 0.78) & (v < 0.45), shape)
    rib_slabs = np.broadcast_to((np.sin(w * np.pi * 9.0) > 0.55) & (w > -0.25), shape)
    paint(ring & rib_slabs, HU["bone"], BONE)

    # Solid nodules inside the lungs (at least one voxel across even on small grids).
    lung_idx = np.argwhere(lungs)
    if len(lung_idx):
        for _ in range(int(rng.integers(2, 5))):
            centre_vox = lung_idx[rng.integers(len(lung_idx))]
            centre = (centre_vox + 0.5) / np.asarray(shape) * 2 - 1
            radius = max(float(rng.uniform(0.03, 0.06)), 2.0 / min(shape))
            nodule = _ellipsoid(u, v, w, centre, (radius,) * 3)
            paint(nodule, HU["nodule"], NODULE)

    image += rng.normal(0.0, 15.0, size=shape).astype(np.float32)
    np.clip(np.rint(image, out=image), -1024.0, 3071.0, out=image)  # integer HU, like a scanner's (int16-exact)
    spacing = tuple(fov / n for fov, n in zip(FIELD_OF_VIEW_MM, shape))
    return dict(image=image, label=label, spacing=spacing)


def phantom_affine(spacing: Sequence[float]) -> np.ndarray:
    """RAS affine of a phantom: diagonal spacing, origin at the volume centre-ish corner (0, 0, 0)."""
    return np.diag([*map(float, spacing), 1.0])
