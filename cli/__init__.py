"""synthvox.cli: the `synthvox` click group (the only package that imports all the others)."""
__all__: list[str] = []
