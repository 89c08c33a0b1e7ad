"""synthvox.downstream."""
