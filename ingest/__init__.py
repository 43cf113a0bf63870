"""The hot path: validate posted events and hand them to the broker, nothing else."""
