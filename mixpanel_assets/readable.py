"""Metadata people read: instants as ISO 8601 UTC, sizes with units."""

from __future__ import annotations

from datetime import UTC, datetime

_UNITS = ("bytes", "kB", "MB", "GB", "TB")


def utc_instant(epoch_ms: int | None) -> str:
    """``2026-11-01T23:59:58.123000+00:00``; ``none`` when there is no instant."""
    if epoch_ms is None:
        return "none"
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat()


def data_size(count: int) -> str:
    """A byte count in decimal units: ``812 bytes``, ``1.3 kB``, ``200.0 MB``."""
    size, unit = float(count), 0
    while size >= 1000 and unit < len(_UNITS) - 1:
        size, unit = size / 1000, unit + 1
    return f"{count} bytes" if unit == 0 else f"{size:.1f} {_UNITS[unit]}"
