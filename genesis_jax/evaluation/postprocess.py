"""Post-processing of a segmentation: keep the largest connected foreground component (of a binary probability map,
or of each class of a softmax network's class map).

nnU-Net's standard post-processing for organs that come in one piece (the liver, the spleen): every foreground
component but the largest is removed. It is applied to the probability map (voxels outside the kept component get
probability 0), so metrics, overlays, saved probabilities and ``predict``'s label maps all see the same result.
Chosen by ``config.eval.largest_component`` (off by default); ``predict`` reads it from the weights' inference
record.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def keep_largest_component(prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """``prob`` (spatial array) with every voxel outside the largest connected component of ``prob > threshold``
    set to 0 (full connectivity: faces, edges and corners); voxels below the threshold keep their value. An image
    with at most one component is returned unchanged."""
    prob = np.asarray(prob)
    foreground = prob > threshold
    components, count = ndimage.label(foreground, structure=np.ones((3,) * prob.ndim, bool))
    if count <= 1:
        return prob
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return np.where(foreground & (components != int(sizes.argmax())), np.zeros_like(prob), prob)


def keep_largest_component_per_class(predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """A class-id map (0 background) with every class but the background reduced to its largest connected
    component (full connectivity); the removed voxels become background, as nnU-Net's per-class post-processing."""
    predicted = np.asarray(predicted).copy()
    for k in range(1, num_classes):
        mask = predicted == k
        kept = keep_largest_component(mask.astype(np.float32)) > 0.5
        predicted[mask & ~kept] = 0
    return predicted
