"""`synthvox sweep`: a grid of short trainings (Dask tasks), probed at fixed steps, tabulated per CPU-minute."""
from .run import run_point, run_sweep
from .spec import Point, SweepError, SweepSpec, load_sweep
from .table import summary_rows, write_outputs

__all__ = ["Point", "SweepError", "SweepSpec", "load_sweep", "run_point", "run_sweep", "summary_rows", "write_outputs"]
