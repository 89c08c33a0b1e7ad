"""synthvox.engine."""
