"""How often a long step says what it is doing (``PROGRESS_SECONDS``), and a heartbeat to say it.

Knows nothing of Dagster: steps report through module loggers, which reach the run's event log
(``python_logs`` manages ``mixpanel_assets``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

# A long wait or transfer says what it is doing at least this often.
PROGRESS_SECONDS = 15.0


class Throttle:
    """Says when a long loop should report again: at most once every ``interval`` seconds."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._due = time.monotonic() + interval

    def due(self) -> bool:
        """True once ``interval`` seconds have passed since the last True (or the start)."""
        now = time.monotonic()
        if now < self._due:
            return False
        self._due = now + self._interval
        return True


class Heartbeat:
    """Calls ``report`` every ``interval`` seconds from a daemon thread while the block runs.

    The interval defaults to ``PROGRESS_SECONDS``. A blocked read or a long sleep still speaks.
    """

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
