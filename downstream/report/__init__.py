"""Benchmark reports: Markdown and one self-contained HTML page from results records."""
from .build import build_report
from .tables import group_of, group_records

__all__ = ["build_report", "group_of", "group_records"]
