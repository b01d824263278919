"""Restoration pre-training recipes: Models Genesis 3D/2D and UNet++ (`genesis-jax pretrain`)."""
