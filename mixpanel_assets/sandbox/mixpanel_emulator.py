"""A loopback emulator of Mixpanel's Raw Event Export API (``GET /api/2.0/export``).

The export client must be tested against real HTTP (chunked streaming whose chunks cut across
lines, on-the-fly gzip, Mixpanel's odd status codes, resets, ``terminated early``) and
``make demo`` must run offline. This server follows the documented contract and the behaviour
seen in the wild, serves the synthetic days of ``synthetic_events``, and knows nothing of Dagster.

Order of checks on the export path: a queued fault is consumed first (a ``status`` fault answers
at once, the body faults shape the 200 that follows), then authentication, ``project_id``, the
rate limit (which counts every authenticated request it admits), then the query parameters.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
import operator
import re
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

import orjson
from isal import isal_zlib

from mixpanel_assets.sandbox.synthetic_events import (
    TIME_REGIMES,
    late_events,
    synthetic_day,
)

EXPORT_PATH = "/api/2.0/export"
TERMINATED_EARLY = b"terminated early"
MAX_LIMIT = 100_000
GZIP_MIN_BYTES = 1400  # Mixpanel gzips only responses over 1400 bytes
_COMPRESS_BLOCK_BYTES = 64 * 1024
_UNSUPPORTED_WHERE = (
    'the local emulator supports only where expressions properties["mp_processing_time_ms"] <op> N'
    ' and number(properties["mp_processing_time_ms"]) <op> N, with <op> one of > >= < <= ==,'
    " (each possibly in parentheses) joined by ' and '"
)
_WHERE_CLAUSE = re.compile(
    r'\s*(?P<number>number\(\s*)?properties\["mp_processing_time_ms"\](?(number)\s*\))'
    r"\s*(?P<op>>=|<=|==|>|<)\s*(?P<value>-?\d+(?:\.\d+)?)\s*"
)
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# A byte-aligned deflate block header with BTYPE=11 (reserved): any inflater fails on it.
_INVALID_DEFLATE = b"\xff\xff\xff\xff"

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


class _ApiError(Exception):
    """An error answer: Mixpanel's JSON body ``{"request": ..., "error": ...}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class _ConnectionReset(Exception):
    """Raised mid-body by the ``reset`` fault: the connection must be torn down abruptly."""


@dataclass(frozen=True)
class _ExportQuery:
    """The validated query parameters of one export request."""

    from_date: date
    to_date: date
    events: frozenset[str] | None
    where: Callable[[dict[str, Any]], bool] | None
    limit: int | None
    time_in_ms: bool


class _Exchange:
    """Writes one response and logs it just before its last byte goes out.

    Logging before the end of the response (not after) means a client that has read a whole
    response always finds it in the request log.
    """

    def __init__(self, handler: _Handler, record: Callable[[int, int], None]) -> None:
        self.handler = handler
        self.status = 0
        self.body_bytes = 0
        self._record = record
        self._logged = False

    def log(self, pending_bytes: int = 0) -> None:
        """Record the exchange once, counting ``pending_bytes`` about to be sent."""
        if not self._logged:
            self._logged = True
            self._record(self.status, self.body_bytes + pending_bytes)

    def send_head(self, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.handler.send_response(status)
        for name, value in headers.items():
            self.handler.send_header(name, value)
        self.handler.end_headers()

    def send_whole(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_head(status, {**headers, "Content-Length": str(len(body))})
        self.body_bytes = len(body)
        self.log()
        self.handler.wfile.write(body)

    def send_error(self, error: _ApiError) -> None:
        body = orjson.dumps({"request": self.handler.path, "error": error.message})
        self.send_whole(error.status, body, {"Content-Type": "application/json", **error.headers})

    def send_chunk(self, chunk: bytes) -> None:
        self.handler.wfile.write(b"%X\r\n%b\r\n" % (len(chunk), chunk))
        self.body_bytes += len(chunk)

    def reset(self) -> None:
        """Close with an RST (SO_LINGER 0) rather than a FIN, as a dropped connection looks."""
        self.log()
        self.handler.close_connection = True
        connection = self.handler.connection
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.handler.rfile.close()  # the socket's fd closes only once its files are closed
        connection.close()


class _ChunkedBody:
    """A chunked body cut in fixed-size chunks that ignore line boundaries, as Mixpanel's are."""

    def __init__(self, exchange: _Exchange, chunk_size: int, reset_after: int | None) -> None:
        self._exchange = exchange
        self._chunk_size = chunk_size
        self._reset_after = reset_after
        self._buffer = bytearray()

    def write(self, data: bytes) -> None:
        self._buffer += data
        size = self._chunk_size
        while len(self._buffer) >= size:
            self._send(bytes(self._buffer[:size]))
            del self._buffer[:size]

    def close(self, tail: bytes = b"") -> None:
        """Send ``tail`` and what is buffered, then end the body.

        The exchange is logged before that last data goes out, so a client that stops at
        the end of the data (or on a decoding error in it) finds the request in the log.
        """
        self._buffer += tail
        if self._reset_after is None:
            self._exchange.log(pending_bytes=len(self._buffer))
        for start in range(0, len(self._buffer), self._chunk_size):
            self._send(bytes(self._buffer[start : start + self._chunk_size]))
        self._buffer.clear()
        if self._reset_after is not None:  # a body shorter than the fault's offset
            raise _ConnectionReset
        self._exchange.handler.wfile.write(b"0\r\n\r\n")

    def _send(self, chunk: bytes) -> None:
        if self._reset_after is not None:
            room = self._reset_after - self._exchange.body_bytes
            if len(chunk) >= room:
                if room > 0:
                    self._exchange.send_chunk(chunk[:room])
                raise _ConnectionReset
        self._exchange.send_chunk(chunk)


class _Server(ThreadingHTTPServer):
    """Tracks open connections so that ``stop`` also ends kept-alive ones."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: MixpanelEmulator) -> None:
        super().__init__(address, _Handler)
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by its handler
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # idle kept-alive connections do not hold a thread forever
    server: _Server

    def do_GET(self) -> None:
        self.server.emulator._serve(self)

    def _reject(self) -> None:
        """Other methods get the JSON 404; any request body is left unread, so close after."""
        self.close_connection = True
        self.server.emulator._serve(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = _reject

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: ``MixpanelEmulator.request_log`` records every request."""


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
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind (a free port when ``port`` is 0) and serve from a daemon thread."""
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        server = _Server(self._address, self)
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
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        return int(self._server.server_address[1])

    @property
    def export_url(self) -> str:
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
        """Copies of ``lines`` (events of ``day``) that Mixpanel processed again now, as after a
        client's retry: the same event, a later ``mp_processing_time_ms``. Exports return both."""
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
        with self._lock:
            self._log.clear()

    # -- request handling --------------------------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        arrived, wall_time = time.monotonic(), time.time()
        url = urlsplit(handler.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))

        def record(status: int, body_bytes: int) -> None:
            entry = RequestLogEntry(arrived, wall_time, url.path, query, status, body_bytes)
            with self._lock:
                self._log.append(entry)

        exchange = _Exchange(handler, record)
        try:
            if handler.command != "GET" or url.path != EXPORT_PATH:
                raise _ApiError(
                    404, f"no {handler.command} {url.path}: this emulator serves GET {EXPORT_PATH}"
                )
            self._export(handler, query, exchange)
        except _ApiError as error:
            exchange.send_error(error)
        except _ConnectionReset:
            exchange.reset()
        except OSError:  # the client went away mid-response
            handler.close_connection = True
        finally:
            exchange.log()  # when the response was cut short

    def _export(self, handler: _Handler, query: dict[str, str], exchange: _Exchange) -> None:
        fault = self._next_fault()
        if fault is not None and fault.kind == "status":
            self._send_status_fault(fault, exchange)
            return
        self._authenticate(handler.headers.get("Authorization"))
        self._check_project(query.get("project_id"))
        self._admit()
        export = self._parse_query(query)
        self._stream(exchange, self._export_lines(export), handler.headers, fault)

    def _send_status_fault(self, fault: Fault, exchange: _Exchange) -> None:
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        if fault.body is None:
            if fault.status == 429:
                message = f"Query rate limit exceeded for project_id: {self.project_id}."
            elif fault.status == 500:
                message = "unknown error"  # what Mixpanel's 500s say
            else:
                message = HTTPStatus(fault.status).phrase
            exchange.send_error(_ApiError(fault.status, message, headers))
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
            raise _ApiError(
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
            raise _ApiError(400, "Unable to authenticate request")

    def _check_project(self, project_id: str | None) -> None:
        if not project_id:
            raise _ApiError(400, "project_id is required when authenticating as a service account")
        if not project_id.isdigit():
            raise _ApiError(400, f"project_id must be an integer, got {project_id!r}")
        if project_id != self.project_id:
            raise _ApiError(
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
                    raise _ApiError(
                        429,
                        f"Query rate limit exceeded for project_id: {self.project_id}."
                        f" {count + 1}/{limit} queries in the last {window}.",
                    )
            self._admitted.append(now)

    def _parse_query(self, query: dict[str, str]) -> _ExportQuery:
        from_date = _parse_date(query, "from_date")
        to_date = _parse_date(query, "to_date")
        if to_date > self._today():
            raise _ApiError(400, "to_date cannot be later than today")
        if from_date > to_date:
            raise _ApiError(400, "from_date cannot be later than to_date")
        return _ExportQuery(
            from_date=from_date,
            to_date=to_date,
            events=_parse_events(query.get("event")),
            where=_parse_where(query.get("where")),
            limit=_parse_limit(query.get("limit")),
            time_in_ms=_parse_bool(query, "time_in_ms"),
        )

    def _export_lines(self, export: _ExportQuery) -> Iterator[bytes]:
        """Lines of every day in the range, filtered, converted and truncated as asked."""
        transform = export.events is not None or export.where is not None or export.time_in_ms
        sent = 0
        day = export.from_date
        while day <= export.to_date and sent != export.limit:
            for line in self.events_for_day(day):
                if transform:
                    converted = _filter_line(line, export)
                    if converted is None:
                        continue
                    line = converted
                yield line
                sent += 1
                if sent == export.limit:
                    break
            day += timedelta(days=1)

    def _stream(
        self,
        exchange: _Exchange,
        lines: Iterator[bytes],
        request_headers: Message,
        fault: Fault | None,
    ) -> None:
        """Send a 200 chunked body, gzipped on the fly when asked and worth it; never whole."""
        if fault is not None and fault.kind == "terminated_early":
            lines = itertools.chain(itertools.islice(lines, fault.after_lines), [TERMINATED_EARLY])
        head = bytearray()
        for line in lines:  # peek just enough to know whether the body exceeds 1400 bytes
            head += line + b"\n"
            if len(head) > GZIP_MIN_BYTES:
                break
        corrupt_after = fault.after_bytes if fault and fault.kind == "corrupt_gzip" else None
        wants_gzip = _accepts_gzip(request_headers.get("Accept-Encoding", ""))
        gzip = corrupt_after is not None or (wants_gzip and len(head) > GZIP_MIN_BYTES)
        headers = {"Content-Type": "text/plain; charset=utf-8", "Transfer-Encoding": "chunked"}
        if gzip:
            headers["Content-Encoding"] = "gzip"
        exchange.send_head(200, headers)
        reset_after = fault.after_bytes if fault and fault.kind == "reset" else None
        body = _ChunkedBody(exchange, self._chunk_size, reset_after)
        pieces = itertools.chain([bytes(head)], (line + b"\n" for line in lines))
        if not gzip:
            for piece in pieces:
                body.write(piece)
            body.close()
            return
        # A gzip container (wbits 31) at level 1, through ISA-L and a block of lines at a time:
        # the emulator stays off the bench's critical path.
        compressor = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)
        produced = 0
        for block in _blocks(pieces, _COMPRESS_BLOCK_BYTES):
            compressed = compressor.compress(block)
            body.write(compressed)
            produced += len(compressed)
            if corrupt_after is not None and produced >= corrupt_after:
                break
        if corrupt_after is not None:
            body.close(compressor.flush(isal_zlib.Z_SYNC_FLUSH) + _INVALID_DEFLATE)
        else:
            body.close(compressor.flush())


def _processing_time_ms(line: bytes) -> float:
    """The line's ``mp_processing_time_ms`` (minus infinity when it has none)."""
    try:
        processed = orjson.loads(line)["properties"]["mp_processing_time_ms"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return float("-inf")
    valid = isinstance(processed, int | float) and not isinstance(processed, bool)
    return processed if valid else float("-inf")


def _blocks(pieces: Iterable[bytes], size: int) -> Iterator[bytes]:
    """``pieces`` joined into blocks of at least ``size`` bytes (the last may be shorter)."""
    block = bytearray()
    for piece in pieces:
        block += piece
        if len(block) >= size:
            yield bytes(block)
            block.clear()
    if block:
        yield bytes(block)


def _parse_date(query: dict[str, str], name: str) -> date:
    value = query.get(name)
    if not value:
        raise _ApiError(400, f"{name} is required")
    try:
        if not _DATE.fullmatch(value):
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise _ApiError(400, f"{name} must be a date formatted YYYY-MM-DD, got {value!r}") from None


def _parse_events(value: str | None) -> frozenset[str] | None:
    if not value:
        return None
    try:
        names = orjson.loads(value)
    except orjson.JSONDecodeError:
        names = None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise _ApiError(400, f"event must be a non-empty JSON array of event names, got {value!r}")
    return frozenset(names)


def _parse_where(value: str | None) -> Callable[[dict[str, Any]], bool] | None:
    """The ``mp_processing_time_ms`` comparisons the late-data watermark needs, and no more."""
    if not value:
        return None
    clauses = []
    for text in value.split(" and "):
        match = _WHERE_CLAUSE.fullmatch(_without_parentheses(text))
        if match is None:
            raise _ApiError(400, f"unsupported where expression {value!r}: {_UNSUPPORTED_WHERE}")
        clauses.append((_OPERATORS[match["op"]], float(match["value"])))

    def matches(properties: dict[str, Any]) -> bool:
        processed = properties.get("mp_processing_time_ms")
        if not isinstance(processed, int | float) or isinstance(processed, bool):
            return False
        return all(compare(processed, bound) for compare, bound in clauses)

    return matches


def _without_parentheses(clause: str) -> str:
    clause = clause.strip()
    while clause.startswith("(") and clause.endswith(")"):
        clause = clause[1:-1].strip()
    return clause


def _parse_limit(value: str | None) -> int | None:
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise _ApiError(400, f"limit must be a positive integer, got {value!r}")
    if int(value) > MAX_LIMIT:
        raise _ApiError(400, f"limit cannot be over {MAX_LIMIT}")
    return int(value)


def _parse_bool(query: dict[str, str], name: str) -> bool:
    value = query.get(name, "").lower()
    if value not in ("", "true", "false"):
        raise _ApiError(400, f"{name} must be true or false, got {query[name]!r}")
    return value == "true"


def _filter_line(line: bytes, export: _ExportQuery) -> bytes | None:
    """The line as this export returns it, or None when a filter drops it."""
    event = orjson.loads(line)
    if export.events is not None and event.get("event") not in export.events:
        return None
    properties = event.get("properties") or {}
    if export.where is not None and not export.where(properties):
        return None
    if not export.time_in_ms:
        return line
    seconds = properties.get("time")
    if isinstance(seconds, int | float) and not isinstance(seconds, bool):
        properties["time"] = round(seconds * 1000)
    return orjson.dumps(event)


def _accepts_gzip(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False
