"""How often a long step says what it is doing, and the words it uses for times and sizes.

Knows nothing of Dagster: steps report through module loggers, which reach the run's event log
(``python_logs`` manages ``mixpanel_assets``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType

# A long wait or transfer says what it is doing at least this often.
PROGRESS_SECONDS = 15.0


def iso_utc(epoch_seconds: float) -> str:
    """``2026-11-01T08:30:00Z``: an instant as ISO 8601 UTC, to the second."""
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def size_text(byte_count: int) -> str:
    """A byte count people read: ``812 B``, ``3.4 kB``, ``82.1 MB``, ``1.2 GB`` (powers of 1000)."""
    size = float(byte_count)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


class Heartbeat:
    """Calls ``report`` every ``interval`` seconds (default ``PROGRESS_SECONDS``) from a daemon
    thread while the ``with`` block runs, so that a blocked read or a long sleep still speaks."""

    def __init__(self, report: Callable[[], None], interval: float | None = None) -> None:
        self._report = report
        self._interval = PROGRESS_SECONDS if interval is None else interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._report()
