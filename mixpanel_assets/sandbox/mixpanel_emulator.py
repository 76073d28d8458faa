"""A loopback emulator of Mixpanel's Raw Event Export API (``GET /api/2.0/export``).

Serves the synthetic days of ``synthetic_events`` and knows nothing of Dagster. Design notes
(what it follows, the order of its checks): docs/local-sandbox.md.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

import orjson

from mixpanel_assets.sandbox.mixpanel_export_query import (
    ExportQuery,
    filter_line,
    parse_export_query,
)
from mixpanel_assets.sandbox.mixpanel_http import (
    ApiError,
    ConnectionReset,
    Exchange,
    Handler,
    Server,
    stream_lines,
)
from mixpanel_assets.sandbox.synthetic_events import (
    TIME_REGIMES,
    late_events,
    synthetic_day,
)

EXPORT_PATH = "/api/2.0/export"

FaultKind = Literal["status", "terminated_early", "reset", "corrupt_gzip"]


@dataclass(frozen=True)
class Fault:
    """What the next ``count`` export requests get instead of a normal answer.

    ``status``: that status code, with ``body`` (default: a Mixpanel-like JSON error) and an
    optional ``Retry-After``. ``terminated_early``: a 200 whose body stops after ``after_lines``
    lines and ends with a ``terminated early`` line. ``reset``: the connection is reset after
    ``after_bytes`` body bytes (compressed bytes when gzipped). ``corrupt_gzip``: a gzip body
    (even if not asked for) that turns invalid after at least ``after_bytes`` valid bytes.
    """

    kind: FaultKind
    count: int = 1
    status: int = 500
    body: str | bytes | None = None
    retry_after: int | str | None = None
    after_lines: int = 10
    after_bytes: int = 4096

    def __post_init__(self) -> None:
        if self.kind not in ("status", "terminated_early", "reset", "corrupt_gzip"):
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if self.count < 1 or self.after_lines < 0 or self.after_bytes < 0:
            raise ValueError("count must be >= 1, after_lines and after_bytes >= 0")
        if not 100 <= self.status <= 599:
            raise ValueError(f"not an HTTP status: {self.status}")


@dataclass(frozen=True)
class RequestLogEntry:
    """One request as the emulator saw it (credentials are never recorded)."""

    monotonic: float  # time.monotonic() when the request arrived
    wall_time: float  # time.time() when the request arrived
    path: str
    query: dict[str, str]
    status: int
    body_bytes: int  # body bytes sent on the wire (after gzip, without chunk framing)


class MixpanelEmulator:
    """Mixpanel's Raw Event Export API on 127.0.0.1, serving deterministic synthetic days.

    ``time_regime`` is ``"utc"`` (projects created since 2023: ``from_date``/``to_date`` are
    UTC days whatever ``timezone`` says) or ``"project_local"`` (legacy projects: dates are days
    in ``timezone`` and ``time`` is local wall-clock time read as UTC); ``day_timezone`` is the
    zone of the dates. Every day up to ``today()`` is whole (``events_per_day`` lines plus late
    events), today included, so that exports are reproducible; with a ``clock`` (epoch seconds,
    e.g. one a test moves), today is the clock's date and only events processed by the clock's
    time are served. ``project_id``, ``timezone``, ``time_regime`` and ``events_per_day`` are
    public for callers that configure a client.
    """

    def __init__(
        self,
        *,
        project_id: str = "2384945",
        username: str = "local-sandbox.mp-service-account",
        secret: str = "local-sandbox-secret",
        timezone: str = "UTC",
        time_regime: str = "utc",
        events_per_day: int = 400,
        chunk_size: int = 997,
        today: Callable[[], date] | None = None,
        clock: Callable[[], float] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        max_requests_per_hour: int | None = None,
        max_requests_per_second: int | None = None,
    ) -> None:
        if time_regime not in TIME_REGIMES:
            raise ValueError(f"time_regime must be one of {TIME_REGIMES}, got {time_regime!r}")
        if events_per_day < 0 or chunk_size < 1:
            raise ValueError("events_per_day must be >= 0 and chunk_size >= 1")
        ZoneInfo(timezone)  # fails early on an unknown zone
        self.project_id = project_id
        self.timezone = timezone
        self.day_timezone = timezone if time_regime == "project_local" else "UTC"
        zone = ZoneInfo(self.day_timezone)
        self.time_regime = time_regime
        self.events_per_day = events_per_day
        self._username = username
        self._secret = secret
        self._chunk_size = chunk_size
        self._today = today or (lambda: datetime.now(zone).date())
        self._clock = clock
        if clock is not None and today is None:
            self._today = lambda: datetime.fromtimestamp(clock(), zone).date()
        self._address = (host, port)
        self._max_per_hour = max_requests_per_hour
        self._max_per_second = max_requests_per_second
        self._lock = threading.Lock()
        self._late: dict[date, list[bytes]] = {}
        self._late_batches: dict[date, int] = {}
        self._max_processing_ms: dict[date, int] = {}  # over all lines served for the day
        self._faults: deque[list[Any]] = deque()  # [fault, requests left]
        self._admitted: deque[float] = deque()  # monotonic arrival of rate-limited requests
        self._log: list[RequestLogEntry] = []
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind (a free port when ``port`` is 0) and serve from a daemon thread."""
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        server = Server(self._address, self._serve)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"mixpanel-emulator:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and any open connection."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections()
        thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self if self._server is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port it listens on."""
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        return int(self._server.server_address[1])

    @property
    def export_url(self) -> str:
        """The URL of its export endpoint."""
        host = str(self._server.server_address[0]) if self._server else self._address[0]
        return f"http://{host}:{self.port}{EXPORT_PATH}"

    # -- data --------------------------------------------------------------------------------

    def events_for_day(self, day: date) -> Iterator[bytes]:
        """The lines (no newline) a one-day export of ``day`` returns now: synthetic, then late."""
        with self._lock:
            late = list(self._late.get(day, ()))
        synthetic = synthetic_day(
            self.project_id,
            day,
            events_per_day=self.events_per_day,
            timezone=self.day_timezone,
            time_regime=self.time_regime,
        )
        return self._processed_by_now(itertools.chain(synthetic, late))

    def _processed_by_now(self, lines: Iterator[bytes]) -> Iterator[bytes]:
        """With a ``clock``, only the events Mixpanel has processed by then: an event becomes
        visible once its ``mp_processing_time_ms`` has passed, as an open day grows."""
        if self._clock is None:
            return lines
        now_ms = self._clock() * 1000
        return (line for line in lines if _processing_time_ms(line) <= now_ms)

    def add_late_events(self, day: date, count: int) -> list[bytes]:
        """Add ``count`` events of ``day`` processed now (after all the day's previous events).

        Later exports of ``day`` end with them, and a ``where`` on ``mp_processing_time_ms``
        above any earlier watermark returns exactly them.
        """
        self._measure_synthetic_day(day)
        with self._lock:
            batch = self._late_batches.get(day, 0)
            previous_max = self._max_processing_ms[day]
            # With a clock, processed at the clock's time (visible from then on), else after
            # everything the day holds, so that a where above any watermark returns them.
            processed_at_ms = (
                round(self._clock() * 1000)
                if self._clock
                else max(time.time_ns() // 1_000_000, previous_max + 1)
            )
            lines = late_events(
                self.project_id,
                day,
                count=count,
                batch=batch,
                processed_at_ms=processed_at_ms,
                timezone=self.day_timezone,
                time_regime=self.time_regime,
            )
            self._late_batches[day] = batch + 1
            self._late.setdefault(day, []).extend(lines)
            if lines:
                last = orjson.loads(lines[-1])["properties"]["mp_processing_time_ms"]
                self._max_processing_ms[day] = max(previous_max, last)
        return lines

    def add_resent_events(self, day: date, lines: list[bytes]) -> list[bytes]:
        """Copies of ``lines`` (events of ``day``) that Mixpanel processed again now.

        As after a client's retry: the same event, a later ``mp_processing_time_ms``. Exports return
        both.
        """
        self._measure_synthetic_day(day)
        with self._lock:
            processed = (
                round(self._clock() * 1000)
                if self._clock
                else max(time.time_ns() // 1_000_000, self._max_processing_ms[day] + 1)
            )
            copies = []
            for line in lines:
                event = orjson.loads(line)
                event["properties"]["mp_processing_time_ms"] = processed
                copies.append(orjson.dumps(event))
                processed += 1
            self._late.setdefault(day, []).extend(copies)
            if copies:
                self._max_processing_ms[day] = max(self._max_processing_ms[day], processed - 1)
        return copies

    def _measure_synthetic_day(self, day: date) -> None:
        """Seed the day's max ``mp_processing_time_ms`` with one pass over its synthetic lines.

        The pass runs outside the lock, so that a large day does not stall requests.
        """
        with self._lock:
            if day in self._max_processing_ms:
                return
        synthetic = synthetic_day(
            self.project_id,
            day,
            events_per_day=self.events_per_day,
            timezone=self.day_timezone,
            time_regime=self.time_regime,
        )
        highest = max(
            (orjson.loads(line)["properties"]["mp_processing_time_ms"] for line in synthetic),
            default=0,
        )
        with self._lock:
            self._max_processing_ms.setdefault(day, highest)

    # -- faults and log ----------------------------------------------------------------------

    def queue_fault(self, fault: Fault) -> None:
        """Make the next ``fault.count`` export requests fail this way (after earlier faults)."""
        with self._lock:
            self._faults.append([fault, fault.count])

    def _next_fault(self) -> Fault | None:
        with self._lock:
            if not self._faults:
                return None
            entry = self._faults[0]
            entry[1] -= 1
            if entry[1] == 0:
                self._faults.popleft()
            return entry[0]

    @property
    def request_log(self) -> list[RequestLogEntry]:
        """A snapshot of every request served so far, oldest first."""
        with self._lock:
            return list(self._log)

    def clear_request_log(self) -> None:
        """Forget every request served so far."""
        with self._lock:
            self._log.clear()

    # -- request handling --------------------------------------------------------------------

    def _serve(self, handler: Handler) -> None:
        arrived, wall_time = time.monotonic(), time.time()
        url = urlsplit(handler.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))

        def record(status: int, body_bytes: int) -> None:
            entry = RequestLogEntry(arrived, wall_time, url.path, query, status, body_bytes)
            with self._lock:
                self._log.append(entry)

        exchange = Exchange(handler, record)
        try:
            if handler.command != "GET" or url.path != EXPORT_PATH:
                raise ApiError(
                    404, f"no {handler.command} {url.path}: this emulator serves GET {EXPORT_PATH}"
                )
            self._export(handler, query, exchange)
        except ApiError as error:
            exchange.send_error(error)
        except ConnectionReset:
            exchange.reset()
        except OSError:  # the client went away mid-response
            handler.close_connection = True
        finally:
            exchange.log()  # when the response was cut short

    def _export(self, handler: Handler, query: dict[str, str], exchange: Exchange) -> None:
        fault = self._next_fault()
        if fault is not None and fault.kind == "status":
            self._send_status_fault(fault, exchange)
            return
        self._authenticate(handler.headers.get("Authorization"))
        self._check_project(query.get("project_id"))
        self._admit()
        export = parse_export_query(query, self._today())
        stream_lines(
            exchange,
            self._export_lines(export),
            accept_encoding=handler.headers.get("Accept-Encoding", ""),
            chunk_size=self._chunk_size,
            terminate_after_lines=_fault_setting(fault, "terminated_early", "after_lines"),
            reset_after_bytes=_fault_setting(fault, "reset", "after_bytes"),
            corrupt_gzip_after_bytes=_fault_setting(fault, "corrupt_gzip", "after_bytes"),
        )

    def _send_status_fault(self, fault: Fault, exchange: Exchange) -> None:
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        if fault.body is None:
            if fault.status == 429:
                message = f"Query rate limit exceeded for project_id: {self.project_id}."
            elif fault.status == 500:
                message = "unknown error"  # what Mixpanel's 500s say
            else:
                message = HTTPStatus(fault.status).phrase
            exchange.send_error(ApiError(fault.status, message, headers))
            return
        body = fault.body.encode() if isinstance(fault.body, str) else fault.body
        try:
            orjson.loads(body)
            content_type = "application/json"
        except orjson.JSONDecodeError:
            content_type = "text/plain; charset=utf-8"
        exchange.send_whole(fault.status, body, {"Content-Type": content_type, **headers})

    def _authenticate(self, header: str | None) -> None:
        scheme, _, value = (header or "").strip().partition(" ")
        if scheme.lower() != "basic" or not value.strip():
            raise ApiError(
                401,
                "authentication required: HTTP Basic with service-account username:secret",
                {"WWW-Authenticate": 'Basic realm="Mixpanel"'},
            )
        value = value.strip()
        try:
            credentials = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            credentials = value  # Mixpanel also accepts username:secret in plain text
        if credentials != f"{self._username}:{self._secret}":
            raise ApiError(400, "Unable to authenticate request")

    def _check_project(self, project_id: str | None) -> None:
        if not project_id:
            raise ApiError(400, "project_id is required when authenticating as a service account")
        if not project_id.isdigit():
            raise ApiError(400, f"project_id must be an integer, got {project_id!r}")
        if project_id != self.project_id:
            raise ApiError(
                403, f"service account {self._username} has no access to project {project_id}"
            )

    def _admit(self) -> None:
        """Per-project sliding-window rate limits (Mixpanel: 60/hour and 3/second)."""
        with self._lock:
            now = time.monotonic()
            while self._admitted and self._admitted[0] <= now - 3600:
                self._admitted.popleft()
            in_last_second = sum(1 for t in self._admitted if t > now - 1)
            windows = (
                (self._max_per_second, in_last_second, "second"),
                (self._max_per_hour, len(self._admitted), "hour"),
            )
            for limit, count, window in windows:
                if limit is not None and count >= limit:
                    raise ApiError(
                        429,
                        f"Query rate limit exceeded for project_id: {self.project_id}."
                        f" {count + 1}/{limit} queries in the last {window}.",
                    )
            self._admitted.append(now)

    def _export_lines(self, export: ExportQuery) -> Iterator[bytes]:
        """Lines of every day in the range, filtered, converted and truncated as asked."""
        transform = export.transforms
        sent = 0
        day = export.from_date
        while day <= export.to_date and sent != export.limit:
            for line in self.events_for_day(day):
                if transform:
                    converted = filter_line(line, export)
                    if converted is None:
                        continue
                    line = converted
                yield line
                sent += 1
                if sent == export.limit:
                    break
            day += timedelta(days=1)


def _processing_time_ms(line: bytes) -> float:
    """The line's ``mp_processing_time_ms`` (minus infinity when it has none)."""
    try:
        processed = orjson.loads(line)["properties"]["mp_processing_time_ms"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return float("-inf")
    valid = isinstance(processed, int | float) and not isinstance(processed, bool)
    return processed if valid else float("-inf")


def _fault_setting(fault: Fault | None, kind: FaultKind, setting: str) -> int | None:
    """``fault``'s ``setting`` when it is a fault of ``kind``, else None."""
    return getattr(fault, setting) if fault is not None and fault.kind == kind else None
