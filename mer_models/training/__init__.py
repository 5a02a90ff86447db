"""Training: the loop, its metrics and its checkpoints."""
