"""Client of Mixpanel's Raw Event Export API (``GET /api/2.0/export``).

Knows nothing of Dagster. The body streams straight to disk: when Mixpanel gzips it we keep the
gzip bytes exactly as received (byte-faithful and no re-compression), otherwise we compress it
ourselves; in both cases the decompressed stream is split on ``b"\\n"`` only (never
``splitlines``, which also breaks on U+2028 inside JSON strings) to count and summarise lines.
A ``terminated early`` trailer, a truncated last line, a broken gzip stream or a reset
connection mean the export is incomplete: the whole request is retried into a fresh file.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import orjson
import requests
import tenacity
import urllib3
from isal import isal_zlib

from mixpanel_assets.http_retry import (
    MAX_RETRY_AFTER_SECONDS,
    RetryLater,
    RetryPolicy,
    retry_after_header,
)
from mixpanel_assets.mixpanel.export_progress import ExportProgress
from mixpanel_assets.mixpanel.export_stream import IncompleteExportError, LineScanner, consume
from mixpanel_assets.mixpanel.rate_budget import SECOND_WINDOW_WAIT, RateBudget

REGION_EXPORT_URLS = {
    "US": "https://data.mixpanel.com/api/2.0/export",
    "EU": "https://data-eu.mixpanel.com/api/2.0/export",
    "IN": "https://data-in.mixpanel.com/api/2.0/export",
}
_Result = TypeVar("_Result")


class MixpanelExportError(RuntimeError):
    """The export failed; the message says why and what to do.

    ``transient`` is True when Mixpanel kept failing or cutting the export short through every
    attempt (trying again later may work) and False when it refused the request.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


# What another attempt of the whole request may cure.
_RETRYABLE = (
    IncompleteExportError,
    RetryLater,
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    isal_zlib.error,
)


@dataclass(frozen=True)
class ExportQuery:
    """One export request: an inclusive range of project days and optional filters."""

    from_date: date
    to_date: date
    events: tuple[str, ...] = ()
    where: str | None = None
    limit: int | None = None
    time_in_ms: bool = False

    def params(self, project_id: str) -> dict[str, str]:
        """The export endpoint's query parameters for ``project_id``."""
        params = {
            "project_id": project_id,
            "from_date": self.from_date.isoformat(),
            "to_date": self.to_date.isoformat(),
        }
        if self.events:
            params["event"] = orjson.dumps(list(self.events)).decode()
        if self.where:
            params["where"] = self.where
        if self.limit is not None:
            params["limit"] = str(self.limit)
        if self.time_in_ms:
            params["time_in_ms"] = "true"
        return params


@dataclass
class ExportSummary:
    """What one complete export held: counts, checksum, time range and the late-data watermark."""

    line_count: int = 0
    byte_count: int = 0
    sha256: str = ""
    min_time: float | None = None
    max_time: float | None = None
    max_processing_time_ms: int | None = None
    unparseable_lines: int = 0
    event_counts: Counter[str] = field(default_factory=Counter)
    attempts: int = 1

    def observe(self, line: bytes) -> None:
        """Count one exported line: its event name, time range and processing-time watermark."""
        self.line_count += 1
        try:
            event = orjson.loads(line)
            name, properties = event["event"], event["properties"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            name, properties = None, None
        if not isinstance(properties, dict):
            self.unparseable_lines += 1
            return
        self.event_counts[str(name)] += 1
        raw_time = properties.get("time")
        if isinstance(raw_time, int | float) and not isinstance(raw_time, bool):
            self.min_time = raw_time if self.min_time is None else min(self.min_time, raw_time)
            self.max_time = raw_time if self.max_time is None else max(self.max_time, raw_time)
        processed = properties.get("mp_processing_time_ms")
        if isinstance(processed, int) and not isinstance(processed, bool):
            current = self.max_processing_time_ms
            self.max_processing_time_ms = processed if current is None else max(current, processed)


class UnsplittableExportError(MixpanelExportError):
    """A multi-day export held a line whose day cannot be told."""


class _DaySplitter:
    """Routes each line of a multi-day export to its day's gzip file and summary."""

    def __init__(self, destinations: dict[date, Path], day_of: Callable[[Any], date]) -> None:
        self._destinations = destinations
        self._day_of = day_of
        self._files: dict[date, gzip.GzipFile] = {}
        self._summaries = {day: ExportSummary() for day in destinations}
        self._digests = {day: hashlib.sha256() for day in destinations}

    def __enter__(self) -> _DaySplitter:
        for day, path in self._destinations.items():
            self._files[day] = gzip.GzipFile(path, mode="wb", compresslevel=1, mtime=0)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for file in self._files.values():
            file.close()

    def route(self, line: bytes) -> None:
        """Write the line to the file of its event's day; a line of no requested day raises."""
        try:
            day = self._day_of(orjson.loads(line)["properties"]["time"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError):
            day = None
        if day not in self._files:
            raise UnsplittableExportError(
                f"a line of the multi-day export belongs to no requested day ({line[:80]!r}...)"
            )
        data = line + b"\n"
        self._files[day].write(data)
        self._digests[day].update(data)
        self._summaries[day].byte_count += len(data)
        self._summaries[day].observe(line)

    def summaries(self) -> dict[date, ExportSummary]:
        """Each day's summary, with the checksum of its lines."""
        for day, summary in self._summaries.items():
            summary.sha256 = self._digests[day].hexdigest()
        return self._summaries


class MixpanelExportClient:
    """Streams Raw Event Export responses to gzip files, retrying what is worth retrying."""

    def __init__(
        self,
        *,
        project_id: str,
        username: str,
        secret: str,
        export_url: str,
        timezone: str = "UTC",  # the zone of the export days, for advice only
        connect_timeout_seconds: float = 10.0,
        read_timeout_seconds: float = 600.0,
        max_attempts: int = 5,
        retry_base_seconds: float = 2.0,
        retry_max_seconds: float = 120.0,
        max_retry_after_seconds: float = MAX_RETRY_AFTER_SECONDS,
        probe_timeout_seconds: tuple[float, float] = (3.0, 7.0),
        budget: RateBudget | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.project_id = project_id
        self.export_url = export_url
        self.timezone = timezone
        self._auth = (username, secret)
        self._timeout = (connect_timeout_seconds, read_timeout_seconds)
        self._retry = RetryPolicy(
            max_attempts=max_attempts,
            base_seconds=retry_base_seconds,
            max_seconds=retry_max_seconds,
            max_retry_after_seconds=max_retry_after_seconds,
        )
        self._probe_timeout = probe_timeout_seconds
        self._budget = budget
        self._session = session or requests.Session()

    def export_to_file(self, query: ExportQuery, destination: Path) -> ExportSummary:
        """Write the complete export of ``query`` to ``destination`` (gzip) and summarise it.

        Each attempt writes ``destination`` from scratch, so a failed attempt leaves nothing
        behind that could be mistaken for the export; the caller publishes the file atomically.
        """
        return self._with_retries(
            query, lambda progress: self._export_once(query, destination, progress)
        )

    def export_days_to_files(
        self, query: ExportQuery, destinations: dict[date, Path], day_of: Callable[[Any], date]
    ) -> dict[date, ExportSummary]:
        """One request for several days, split into one gzip file per day as it streams.

        ``day_of`` gives the export day of an event's ``time``. A line whose day cannot be told
        or lies outside ``destinations`` raises ``UnsplittableExportError``: export those days
        one at a time instead.
        """
        return self._with_retries(
            query, lambda progress: self._export_split_once(query, destinations, day_of, progress)
        )

    def _with_retries(
        self, query: ExportQuery, attempt_export: Callable[[ExportProgress], _Result]
    ) -> _Result:
        """Run ``attempt_export`` until it completes; each attempt restarts the streamed export
        from scratch (tenacity, under the shared retry policy) and reports its progress."""
        what = f"Mixpanel export {query.from_date}..{query.to_date}"
        retrying = self._retry.retrying(tenacity.retry_if_exception_type(_RETRYABLE), what=what)
        numbers = itertools.count(1)

        def attempt() -> _Result:
            with ExportProgress(what, next(numbers), self._retry.max_attempts) as progress:
                return attempt_export(progress)

        try:
            result = retrying(attempt)
        except tenacity.RetryError as exhausted:
            raise MixpanelExportError(
                f"Mixpanel export of {query.from_date}..{query.to_date} from {self.export_url} "
                f"did not complete after {self._retry.max_attempts} attempts; last problem: "
                f"{_problem(exhausted.last_attempt.exception())}. Nothing was published for "
                "these days; re-run them later.",
                transient=True,
            ) from None
        attempts = retrying.statistics.get("attempt_number", 1)
        for summary in result.values() if isinstance(result, dict) else [result]:
            summary.attempts = attempts
        return result

    def probe_count(self, query: ExportQuery) -> int:
        """Lines an export returns, asked once and never waited for (the sensor's probe).

        It takes a rate-budget slot only if one is free now (or within the per-second window),
        has short timeouts, and is not retried: ``MixpanelRateLimitedError`` when the budget or
        Mixpanel says not now (with Mixpanel's Retry-After, capped), ``MixpanelExportError`` for
        any other trouble.
        """
        if self._budget is not None:
            wait = self._budget.take_if_free(SECOND_WINDOW_WAIT)
            if wait is not None:
                raise MixpanelRateLimitedError(
                    f"the shared Mixpanel rate budget has no query free for {wait:.0f} s",
                    retry_after=wait,
                )
        summary = ExportSummary()
        scanner = LineScanner(summary.observe)
        try:
            with self._get(query, timeout=self._probe_timeout, budgeted=False) as response:
                consume(response, scanner, file=None)
            scanner.finish()
        except RetryLater as status:
            if status.message.startswith("HTTP 429"):
                raise MixpanelRateLimitedError(
                    status.message, retry_after=self._retry.capped(status.retry_after)
                ) from None
            raise MixpanelExportError(status.message, transient=True) from None
        except _RETRYABLE as problem:
            raise MixpanelExportError(_problem(problem), transient=True) from None
        return summary.line_count

    def count_events(self, query: ExportQuery) -> int:
        """Number of lines an export returns (use a small ``limit`` to keep the probe cheap).

        Retried like an export; persistent trouble raises ``MixpanelExportError``.
        """
        summary = self._with_retries(query, lambda progress: self._count_once(query, progress))
        return summary.line_count

    def _count_once(self, query: ExportQuery, progress: ExportProgress) -> ExportSummary:
        summary = ExportSummary()
        scanner = LineScanner(summary.observe)
        progress.watch(scanner)
        with self._get(query, progress=progress) as response:
            consume(response, scanner, file=None)
        scanner.finish()
        return summary

    def _export_once(
        self, query: ExportQuery, destination: Path, progress: ExportProgress
    ) -> ExportSummary:
        summary = ExportSummary()
        scanner = LineScanner(summary.observe)
        progress.watch(scanner)
        with self._get(query, progress=progress) as response, destination.open("wb") as file:
            consume(response, scanner, file)
        summary.sha256 = scanner.finish()
        summary.byte_count = scanner.byte_count
        return summary

    def _export_split_once(
        self,
        query: ExportQuery,
        destinations: dict[date, Path],
        day_of: Callable[[Any], date],
        progress: ExportProgress,
    ) -> dict[date, ExportSummary]:
        with (
            _DaySplitter(destinations, day_of) as splitter,
            self._get(query, progress=progress) as response,
        ):
            scanner = LineScanner(splitter.route)
            progress.watch(scanner)
            consume(response, scanner, file=None)
            scanner.finish()
        return splitter.summaries()

    def _get(
        self,
        query: ExportQuery,
        *,
        timeout: tuple[float, float] | None = None,
        budgeted: bool = True,
        progress: ExportProgress | None = None,
    ) -> requests.Response:
        if budgeted and self._budget is not None:
            self._budget.wait_for_turn(progress.waiting_for_budget if progress else None)
        try:
            response = self._session.get(
                self.export_url,
                params=query.params(self.project_id),
                auth=self._auth,
                headers={"Accept-Encoding": "gzip", "Accept": "text/plain"},
                stream=True,
                timeout=timeout or self._timeout,
            )
        except requests.exceptions.InvalidURL as problem:
            raise MixpanelExportError(
                f"MIXPANEL_EXPORT_URL {self.export_url!r} is not a valid URL ({problem})."
            ) from None
        if response.status_code != 200:
            with response:
                self._raise_for_status(response, query)
        return response

    def _raise_for_status(self, response: requests.Response, query: ExportQuery) -> None:
        status = response.status_code
        message = _error_message(response)
        if status == 429 or status >= 500:
            raise RetryLater(f"HTTP {status}: {message}", retry_after_header(response.headers))
        lowered = message.lower()
        if status == 401 or (status == 400 and "authenticate" in lowered):
            advice = (
                "Mixpanel rejected the service account credentials: check "
                "MIXPANEL_SERVICE_ACCOUNT_USERNAME and MIXPANEL_SERVICE_ACCOUNT_SECRET, and that "
                "the service account has not expired."
            )
        elif status == 400 and "to_date" in lowered and "today" in lowered:
            advice = (
                f"Mixpanel says {query.to_date} has not begun yet in the timezone of its export "
                f"days, while it has in {self.timezone}, the zone we read them in. A project "
                "created since 2023 has UTC days: set MIXPANEL_EVENT_TIME=utc. A legacy project "
                "(MIXPANEL_EVENT_TIME=project_local) has days in its timezone: "
                f"MIXPANEL_PROJECT_TIMEZONE ({self.timezone}) probably differs from the one in "
                "the Mixpanel project's settings: make them the same."
            )
        elif status == 402:
            advice = (
                "The Mixpanel plan of this project does not include the Raw Event Export API; "
                "upgrade the plan or ask Mixpanel support to enable raw export."
            )
        elif status == 403:
            advice = (
                f"The service account has no access to project {self.project_id}: check "
                "MIXPANEL_PROJECT_ID and give the service account a role on that project "
                "(and Classified Data access if the project classifies properties)."
            )
        elif status == 404:
            advice = (
                f"{self.export_url} does not serve the export API: check that MIXPANEL_REGION "
                "matches the project's data residency (US, EU or IN), or MIXPANEL_EXPORT_URL."
            )
        else:
            advice = "Mixpanel refused the export request; check the request parameters."
        raise MixpanelExportError(f"{advice} (HTTP {status}: {message})")


class MixpanelRateLimitedError(MixpanelExportError):
    """Not now: the rate budget has no free query, or Mixpanel answered 429."""

    def __init__(self, message: str, *, retry_after: float | None) -> None:
        super().__init__(message, transient=True)
        self.retry_after = retry_after


def _problem(error: BaseException | None) -> str:
    if isinstance(error, RetryLater | IncompleteExportError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _error_message(response: requests.Response) -> str:
    text = response.text[:500]
    try:
        body: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text.strip() or response.reason
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    return text.strip()
