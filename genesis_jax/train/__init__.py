"""Training: train state, jitted steps, schedules, mesh and sharding, training checkpoints (``checkpointing``; the
weights directory is :mod:`genesis_jax.models.weights`), logging, and the entry functions for pre-training and
fine-tuning."""
