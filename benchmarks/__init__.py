"""synthvox benchmarks: `make bench` runs them and appends results to benchmarks/RESULTS.md."""
