"""Shape templates: the memory-mapped template bank, procedural families and NIfTI ingestion.

    from synthvox.engine.templates import open_bank, resolve_bank
    bank = resolve_bank(None)        # the built-in procedural bank (built once, cached)
    mask = bank.get(0)               # uint8 (d, h, w) 0/1, cropped to its bounding box
"""
from .bank import (FORMAT_VERSION, BankError, BankWriter, TemplateBank, TemplateRecord, cache_dir,
                   default_bank_path, open_bank, resolve_bank)
from .ingest import IngestError, ingest  # note: binds the name `ingest` to the function, not the module
from .procedural import make_procedural_bank

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
