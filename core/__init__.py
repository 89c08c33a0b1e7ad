"""synthvox.core: what every part shares, at the bottom of the import graph (imports no other part).

`configbase` (frozen dataclass configs from YAML), `atomic` (the one atomic writer: bytes,
text, JSON, figures, NIfTI, directories; honours the umask) and `errors` (`SynthvoxError`,
the base of every error the CLI turns into a message).
"""
from .atomic import WriteError
from .configbase import ConfigError
from .errors import SynthvoxError

__all__ = ["SynthvoxError", "ConfigError", "WriteError"]
