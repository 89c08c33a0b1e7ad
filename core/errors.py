"""The one base class of every error synthvox raises on purpose.

Bad input, a missing, corrupt or incompatible file, a refused operation: each part raises a
subclass of `SynthvoxError` whose message names the file, key or value and says what to do.
The subclasses keep a second, built-in base (`ValueError`, `OSError`, `RuntimeError`) so
code that catches those keeps working. The CLI turns a `SynthvoxError` into its message on
stderr and a non-zero exit, with no traceback (`synthvox --debug ...` shows it).
"""
from __future__ import annotations

__all__ = ["SynthvoxError"]


class SynthvoxError(Exception):
    """An expected failure with a message for the user (names the culprit and the fix)."""
