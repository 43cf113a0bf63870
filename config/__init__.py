"""Settings, database and broker wiring: the only place that reads the environment."""
