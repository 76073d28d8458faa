"""The error every configuration problem raises, importable without Dagster.

API clients and the coordinator use it too.
"""


class ConfigError(ValueError):
    """A contract variable is missing or malformed; the message names it and the fix."""


class CorruptStateError(RuntimeError):
    """Shared coordination state cannot be read; the message names the file and what to do."""


class LockLostError(RuntimeError):
    """A held lock's connection dropped, so another holder may have had it meanwhile."""
