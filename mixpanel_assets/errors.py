"""The error every configuration problem raises, importable without Dagster (API clients and the
coordinator use it too)."""


class ConfigError(ValueError):
    """A contract variable is missing or malformed; the message names it and the fix."""
