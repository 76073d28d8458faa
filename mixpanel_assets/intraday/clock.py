"""The time intraday loads go by: one function, so a test can move it with the sandbox's clock."""

from datetime import UTC, datetime


def now() -> datetime:
    """The current time, in UTC (tests replace it)."""
    return datetime.now(UTC)
