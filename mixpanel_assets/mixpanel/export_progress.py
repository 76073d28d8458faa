"""What one attempt of a Mixpanel export has done so far, logged every ``PROGRESS_SECONDS``.

Knows nothing of Dagster: the module logger reaches the run's event log through ``python_logs``.
"""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import Protocol

from mixpanel_assets.progress import Heartbeat
from mixpanel_assets.readable import iso_utc, size_text

logger = logging.getLogger(__name__)
# A wait for the rate budget shorter than this (Mixpanel's per-second window) goes unsaid.
SAID_BUDGET_WAIT_SECONDS = 2.0


class _Counted(Protocol):
    line_count: int
    byte_count: int


class ExportProgress:
    """Says, at its start and then every ``PROGRESS_SECONDS``, what an export attempt is doing.

    That is: waiting for the rate budget (until when), for Mixpanel's first bytes, or how many
    events and bytes have arrived.
    """

    def __init__(self, what: str, attempt: int, max_attempts: int) -> None:
        self.what = what
        self._attempt = f"attempt {attempt} of {max_attempts}"
        self._started = time.monotonic()
        self._budget_until: float | None = None
        self._counted: _Counted | None = None
        self._heartbeat = Heartbeat(self.report)

    def __enter__(self) -> ExportProgress:
        logger.info("%s: %s started", self.what, self._attempt)
        self._heartbeat.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._heartbeat.__exit__(exc_type, exc, traceback)

    def waiting_for_budget(self, until: float, delay: float) -> None:
        """The query waits ``delay`` s for its rate-budget slot at ``until`` (epoch seconds)."""
        if delay < SAID_BUDGET_WAIT_SECONDS:
            return
        self._budget_until = until
        logger.info(
            "%s: %s waits for Mixpanel's rate budget until %s (%.0f s)",
            self.what,
            self._attempt,
            iso_utc(until),
            delay,
        )

    def watch(self, counted: _Counted) -> None:
        """Report the lines and bytes ``counted`` has seen (the decompressed stream)."""
        self._counted = counted

    def report(self) -> None:
        """Log what the attempt is doing now."""
        elapsed = time.monotonic() - self._started
        if self._budget_until is not None and time.time() < self._budget_until:
            logger.info(
                "%s: %s still waits for Mixpanel's rate budget until %s (%.0f s left)",
                self.what,
                self._attempt,
                iso_utc(self._budget_until),
                self._budget_until - time.time(),
            )
        elif self._counted is None or self._counted.byte_count == 0:
            logger.info(
                "%s: %s waits for Mixpanel's answer (%.0f s since the attempt began)",
                self.what,
                self._attempt,
                elapsed,
            )
        else:
            logger.info(
                "%s: %s: %d events, %s received so far in %.0f s",
                self.what,
                self._attempt,
                self._counted.line_count,
                size_text(self._counted.byte_count),
                elapsed,
            )
