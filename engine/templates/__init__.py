"""Shape templates: the memory-mapped template bank (bank.py, written by writer.py), procedural
families, NIfTI ingestion and the built-in procedural bank (builtin.py).

    from synthvox.engine.templates import open_bank, resolve_bank
    bank = resolve_bank(None)        # the built-in procedural bank (built once, cached)
    mask = bank.get(0)               # uint8 (d, h, w) 0/1, cropped to its bounding box
"""
from .bank import FORMAT_VERSION, BankError, TemplateBank, TemplateRecord, open_bank
from .builtin import cache_dir, default_bank_path, resolve_bank
from .ingest import IngestError, ingest  # note: binds the name `ingest` to the function, not the module
from .procedural import make_procedural_bank
from .writer import BankWriter

__all__ = [
    "TemplateBank",
    "TemplateRecord",
    "BankWriter",
    "BankError",
    "open_bank",
    "resolve_bank",
    "default_bank_path",
    "cache_dir",
    "FORMAT_VERSION",
    "make_procedural_bank",
    "ingest",
    "IngestError",
]
