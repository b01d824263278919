"""Active, continual fine-tuning configs: ACFT with a human in the loop, and the simulated-annotation study (`genesis-jax al`)."""
