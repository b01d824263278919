"""Training: train state, jitted steps, schedules, mesh and sharding, checkpointing (the only orbax user),
logging, and the entry functions for pre-training and fine-tuning."""
