"""Words people read in logs and metadata: instants as ISO 8601 UTC, sizes with units."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(epoch_seconds: float) -> str:
    """``2026-11-01T08:30:00Z``: an instant as ISO 8601 UTC, to the second."""
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_instant(epoch_ms: int | None) -> str:
    """A millisecond instant (a watermark) as ISO 8601 UTC to the millisecond, else ``none``.

    For example ``2026-11-01T23:59:58.123Z``.
    """
    if not epoch_ms:
        return "none"
    seconds, millis = divmod(int(epoch_ms), 1000)
    return f"{iso_utc(seconds)[:-1]}.{millis:03d}Z"


def size_text(byte_count: int) -> str:
    """A byte count people read: ``812 B``, ``3.4 kB``, ``82.1 MB``, ``1.2 GB`` (powers of 1000)."""
    size = float(byte_count)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")
