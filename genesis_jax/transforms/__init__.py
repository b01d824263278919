"""The Models Genesis restoration deformations as jit-compiled JAX: flip, local pixel shuffling, non-linear
(Bezier) intensity map, in-/out-painting, and their composition into (input, target) pairs, per sample and batched.
Pure functions of a PRNG key and an array; no I/O. Modules: ``flip``, ``shuffle``, ``intensity``, ``painting``,
their composition (``restoration``), the settings (``config``), the counter-based random streams (``sampling``) and
batched gathers (``batching``). ``augment`` is the other kind: fine-tuning augmentation (nnU-Net's family) of an
image and its mask, imported from its module.

    from genesis_jax.transforms import default_config, restoration_batch
    inputs, targets = restoration_batch(jax.random.key(0), cubes)           # cubes: (B, 64, 64, 32, 1) in [0, 1]
"""

from genesis_jax.transforms.config import RestorationSettings, default_config, settings_from_config
from genesis_jax.transforms.flip import apply_flips, draw_flips, random_flip
from genesis_jax.transforms.intensity import nonlinear_intensity
from genesis_jax.transforms.painting import in_painting, out_painting
from genesis_jax.transforms.restoration import restoration_batch, restoration_pair, single_deformations
from genesis_jax.transforms.shuffle import local_pixel_shuffle

__all__ = [
    "RestorationSettings",
    "apply_flips",
    "default_config",
    "draw_flips",
    "in_painting",
    "local_pixel_shuffle",
    "nonlinear_intensity",
    "out_painting",
    "random_flip",
    "restoration_batch",
    "restoration_pair",
    "settings_from_config",
    "single_deformations",
]
