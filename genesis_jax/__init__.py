"""genesis_jax: annotation-efficient deep learning on 3D medical images, in JAX/Flax.

Models Genesis self-supervised pre-training (restoration of deformed CT sub-volumes), UNet++, and active,
continual fine-tuning (AIFT/ACFT). Sub-packages own one concern each: ``models``, ``transforms``, ``data``,
``train``, ``evaluation``, ``active``, ``interop``; ``configs`` holds the packaged experiment configs (read through
``config_loader``); ``cli`` is the ``genesis-jax`` command.
"""

__version__ = "0.1.0"
