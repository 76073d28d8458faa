"""One retry policy for both HTTP clients (Mixpanel's export and AEP's APIs), through tenacity.

Exponential backoff with jitter between attempts, never shorter than the server's
``Retry-After`` (seconds or an HTTP date), which is capped so that no answer can park a run or
a sensor for hours. Knows nothing of Dagster.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import tenacity

MAX_RETRY_AFTER_SECONDS = 300.0


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
        sleep: Callable[[float], None] = time.sleep,
    ) -> tenacity.Retrying:
        """A tenacity ``Retrying`` following this policy; exhausted, it raises RetryError.

        ``retry_after`` reads the server's wish from an attempt (default: ``retry_after_of``).
        """
        backoff = tenacity.wait_exponential_jitter(
            multiplier=self.base_seconds, max=self.max_seconds, jitter=self.base_seconds
        )

        wished = retry_after or retry_after_of

        def wait(state: tenacity.RetryCallState) -> float:
            return max(backoff(state), self.capped(wished(state)))

        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=wait,
            retry=retry,
            sleep=sleep,
            reraise=False,
        )


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
