"""Intake implementations: ``redis`` (production) and ``memory`` (embedded default, unit tests)."""
