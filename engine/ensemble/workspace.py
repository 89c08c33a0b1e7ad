"""Per-thread scratch buffers (moved to engine/workspace.py: the appearance stage uses them too)."""
from __future__ import annotations

from ..workspace import MAX_CACHED, np_scratch, scratch

__all__ = ["scratch", "np_scratch", "MAX_CACHED"]
