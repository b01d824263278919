"""Active, continual fine-tuning configs: ACFT with a human in the loop (`genesis-jax al`), and the simulated
annotation study (experiments/active_learning_sim.py)."""
