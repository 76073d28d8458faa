"""One retry policy for both HTTP clients (Mixpanel's export and AEP's APIs), through tenacity.

Exponential backoff with jitter between attempts, never shorter than the server's
``Retry-After`` (seconds or an HTTP date), which is capped so that no answer can park a run or
a sensor for hours. Each retry is logged (why, how long, which attempt), and a long pause says
so again every ``PROGRESS_SECONDS``. Knows nothing of Dagster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import tenacity

from mixpanel_assets import progress
from mixpanel_assets.redaction import redact_text

MAX_RETRY_AFTER_SECONDS = 300.0
logger = logging.getLogger(__name__)


class RetryLater(Exception):
    """A failure worth another attempt; ``retry_after`` is the server's wish, in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a request that may succeed later is tried again."""

    max_attempts: int = 5
    base_seconds: float = 1.0
    max_seconds: float = 60.0
    max_retry_after_seconds: float = MAX_RETRY_AFTER_SECONDS

    def capped(self, retry_after: float | None) -> float:
        """The server's Retry-After, never above ``max_retry_after_seconds``."""
        return min(max(retry_after or 0.0, 0.0), self.max_retry_after_seconds)

    def retrying(
        self,
        retry: tenacity.retry_base,
        *,
        retry_after: Callable[[tenacity.RetryCallState], float | None] | None = None,
        sleep: Callable[[float], None] | None = None,
        what: str | None = None,
    ) -> tenacity.Retrying:
        """A tenacity ``Retrying`` following this policy; exhausted, it raises RetryError.

        ``retry_after`` reads the server's wish from an attempt (default: ``retry_after_of``).
        Each retry is logged naming ``what`` is retried (default: the request's method and
        path); the default ``sleep`` says every ``PROGRESS_SECONDS`` how long is left.
        """
        backoff = tenacity.wait_exponential_jitter(
            multiplier=self.base_seconds, max=self.max_seconds, jitter=self.base_seconds
        )

        wished = retry_after or retry_after_of

        def wait(state: tenacity.RetryCallState) -> float:
            return max(backoff(state), self.capped(wished(state)))

        retried = [what or "request"]  # what the pause after the last failure is for

        def say_retry(state: tenacity.RetryCallState) -> None:
            retried[0] = what or _request_of(state)
            _say_retry(state, retried[0], self.max_attempts)

        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=wait,
            retry=retry,
            sleep=sleep or (lambda seconds: _sleep_saying_so(seconds, retried[0])),
            before_sleep=say_retry,
            reraise=False,
        )


def _say_retry(state: tenacity.RetryCallState, what: str, max_attempts: int) -> None:
    """Log why an attempt is tried again and after how long (secrets redacted)."""
    pause = state.upcoming_sleep
    logger.warning(
        "%s: attempt %d of %d failed (%s); trying again in %.1f s",
        what,
        state.attempt_number,
        max_attempts,
        _why(state),
        pause,
    )


def _sleep_saying_so(seconds: float, what: str) -> None:
    """Sleep ``seconds``, saying every ``PROGRESS_SECONDS`` how long is left."""
    deadline = time.monotonic() + seconds
    said = False  # the retry's own message gave the whole pause
    while (left := deadline - time.monotonic()) > 0:
        if said and left >= 1:
            logger.info("%s: %.0f s left before the next attempt", what, left)
        said = True
        time.sleep(min(left, progress.PROGRESS_SECONDS))


def _why(state: tenacity.RetryCallState) -> str:
    outcome = state.outcome
    if outcome is None:
        return "no outcome"
    if outcome.failed:
        error = outcome.exception()
        text = str(error) if isinstance(error, RetryLater) else f"{type(error).__name__}: {error}"
    else:
        text = f"HTTP {getattr(outcome.result(), 'status_code', '?')}"
    return redact_text(text)[:300]


def _request_of(state: tenacity.RetryCallState) -> str:
    """``POST /data/foundation/import/batches``: the request an attempt made, when known."""
    outcome = state.outcome
    if outcome is None:
        return "request"
    holder = outcome.exception() if outcome.failed else outcome.result()
    request = getattr(holder, "request", None)
    method, url = getattr(request, "method", None), getattr(request, "url", None)
    if not method or not url:
        return "request"
    return f"{method} {urlsplit(url).path}"


def retry_after_of(state: tenacity.RetryCallState) -> float | None:
    """The Retry-After an attempt carried: a ``RetryLater``'s, or a response's header."""
    outcome = state.outcome
    if outcome is None:
        return None
    if outcome.failed:
        return getattr(outcome.exception(), "retry_after", None)
    return retry_after_header(getattr(outcome.result(), "headers", {}))


def retry_after_header(headers: Mapping[str, Any]) -> float | None:
    """``Retry-After`` in seconds from now (delay-seconds or HTTP-date); None when absent."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())
