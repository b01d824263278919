"""Fine-tuning recipes: the published Models Genesis target tasks, UNet++ liver, the sample-CT demo.

Run with `genesis-jax finetune`; ``common`` holds the schema every recipe here fills in.
"""
