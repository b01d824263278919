"""Data configs: pre-training cubes and the fine-tuning datasets (`genesis-jax data prepare`)."""
