"""synthvox.train."""
