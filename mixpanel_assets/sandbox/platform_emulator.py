"""A loopback Adobe Experience Platform: IMS tokens, Batch Ingestion and Catalog over real HTTP.

Why it exists: the AEP client is tested against real HTTP (status codes, headers, streamed
uploads, retries) and ``make demo`` runs offline, twice, showing each event once. The emulator
follows AEP's documented contract, not our client's habits: it validates every record with the
project's XDM schema and rejects what AEP rejects (nulls, empty values, schema violations,
timestamps in the future), and it knows nothing of Dagster.

Batch statuses: ``loading`` (created; files may be uploaded) -> COMPLETE -> ``processing`` (after
half of ``processing_seconds``) -> ``success`` or ``failed`` (after the other half). ``loading``
-> ABORT -> ``aborted``. ``success`` -> a successful replay naming it -> ``inactive``: its
records leave the dataset and it gets the tag ``acp_successor``.

Error codes. Failed rows (``GET /export/batches/{id}/failed``): ``1401`` a line that is not a
JSON object, ``1555`` a required field missing or a null/empty value, ``1550`` any other schema
violation or a timestamp in the future (1401 and 1555 are AEP's documented codes, 1550 is the
emulator's own). Batch ``errors``: ``INGEST-1212-400`` (with error diagnostics) or
``INGEST-1211-400`` (without) summarise the failed rows; with diagnostics they are followed by one
``INGEST-<row code>-400`` entry per row code; ``106`` an empty batch; ``INGEST-500`` a fault of
the emulator itself.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import secrets
import shutil
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self, cast
from urllib.parse import parse_qs, unquote, urlsplit

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mixpanel_assets.xdm.schema import empty_value_paths, schema_errors

logger = logging.getLogger(__name__)

MAX_FILE_BYTES = 256 * 1024 * 1024  # AEP's small-file upload limit
_MAX_FORM_BYTES = 1024 * 1024  # JSON and form bodies of the non-upload calls
_DRAIN_LIMIT = 64 * 1024 * 1024  # unread body left over: discard up to this, else close
_CHUNK_BYTES = 1024 * 1024
_LINE_LIMIT = 65536
_ROW_GROUP = 50_000
_SCHEMA_NAME = "mixpanel_experience_event"
_XED_CONTENT_TYPE = "application/vnd.adobe.xed+json;version=1"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RECORD_SCHEMA = pa.schema(
    [(name, pa.string()) for name in ("_id", "timestamp", "eventType", "batch_id", "record")]
)
_ROW_ERRORS = {
    "1401": "The row is not a JSON object and cannot be read or parsed.",
    "1555": "A required field is missing, or a field holds null or an empty value.",
    "1550": "The row does not conform to the dataset's XDM schema.",
}
_ROW_CODE_ORDER = ("1401", "1555", "1550")


@dataclass(frozen=True)
class RequestLogEntry:
    """One answered request (``path`` without the query), so tests can assert on retries."""

    method: str
    path: str
    status: int


@dataclass
class _Fault:
    method: str
    path_prefix: str
    status: int
    remaining: int
    retry_after: int | None


@dataclass
class _Dataset:
    id: str
    name: str
    created: int
    updated: int


@dataclass
class _Batch:
    """A batch as the catalog file stores it; ``_batch_view`` renders the Catalog's JSON."""

    id: str
    dataset_id: str
    status: str
    created: int
    updated: int
    input_format: dict[str, Any]
    tags: dict[str, Any]
    diagnostics: bool
    partial_percent: float
    external_id: str | None = None
    replay: dict[str, Any] | None = None
    complete_requested: bool = False
    started: int | None = None
    completed: int | None = None
    record_count: int | None = None
    failed_record_count: int | None = None
    metrics: dict[str, int] | None = None
    errors: list[dict[str, Any]] | None = None


@dataclass
class _Outcome:
    status: str
    metrics: dict[str, int]
    accepted: int
    failed: int
    errors: list[dict[str, Any]]


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    file: Path | None = None  # streamed from disk instead of ``body``


class _ApiError(Exception):
    """Raised anywhere while handling a request to answer it with ``response``."""

    def __init__(self, response: _Response) -> None:
        super().__init__(response.status)
        self.response = response


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Response:
    return _Response(status, orjson.dumps(payload), headers=headers or {})


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> _ApiError:
    """An error in the shape of AEP's platform APIs: ``{"type", "title", "status", "detail"}``."""
    payload = {
        "type": f"https://ns.adobe.com/aep/errors/LOCAL-{status}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    return _ApiError(_json(status, payload, headers))


def _gateway_error(status: int, code: str, message: str) -> _ApiError:
    """An error in the shape of Adobe's API gateway (token and API key checks)."""
    return _ApiError(_json(status, {"error_code": code, "message": message}))


def _ims_error(status: int, error: str, description: str) -> _ApiError:
    """An error in the shape of IMS's OAuth token endpoint."""
    return _ApiError(_json(status, {"error": error, "error_description": description}))


class _Body:
    """A request body read as a stream: never whole in memory, always consumed before replying."""

    def __init__(self, rfile: BinaryIO, headers: Message) -> None:
        self._rfile = rfile
        self.chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        self.length = 0 if self.chunked else int(headers.get("Content-Length") or 0)
        if self.length < 0:
            raise ValueError("negative Content-Length")
        self._done = not self.chunked and self.length == 0
        self._stream: Iterator[bytes] | None = None

    def chunks(self) -> Iterator[bytes]:
        """The body's bytes; one shared iterator, so a partly read body can still be drained."""
        if self._stream is None:
            self._stream = self._read()
        return self._stream

    def read_all(self, limit: int) -> bytes:
        data = bytearray()
        for chunk in self.chunks():
            data += chunk
            if len(data) > limit:
                raise _problem(413, f"The request body is larger than {limit} bytes.")
        return bytes(data)

    def drain(self) -> bool:
        """Discard what is left unread; False when the connection must close instead."""
        if self._done:
            return True
        if not self.chunked and self.length > _DRAIN_LIMIT:
            return False
        drained = 0
        try:
            for chunk in self.chunks():
                drained += len(chunk)
                if drained > _DRAIN_LIMIT:
                    return False
        except (_ApiError, OSError):
            return False
        return True

    def _read(self) -> Iterator[bytes]:
        if self.chunked:
            yield from self._dechunk()
        else:
            yield from self._exactly(self.length)
        self._done = True

    def _exactly(self, size: int) -> Iterator[bytes]:
        while size > 0:
            chunk = self._rfile.read(min(size, _CHUNK_BYTES))
            if not chunk:
                raise _problem(400, "The request body ended before its announced length.")
            size -= len(chunk)
            yield chunk

    def _dechunk(self) -> Iterator[bytes]:
        while True:
            line = self._rfile.readline(_LINE_LIMIT)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _problem(400, "The chunked request body is malformed.") from None
            if size == 0:
                break
            yield from self._exactly(size)
            self._rfile.readline(_LINE_LIMIT)
        while self._rfile.readline(_LINE_LIMIT).strip():  # trailer fields, up to the blank line
            pass


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: _Body

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


_Route = Callable[[_Request, re.Match[str]], _Response]


class _Server(ThreadingHTTPServer):
    """The HTTP server; tracks open connections so ``stop`` can close idle keep-alive ones."""

    def __init__(self, address: tuple[str, int], answer: Callable[[_Request], _Response]) -> None:
        self.answer = answer
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def close_connections(self) -> None:
        with self.connections_lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):  # already closed by the client
                    connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """HTTP plumbing only: body framing, replies and keep-alive; the emulator answers."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms stalls
    timeout = 120  # seconds an idle keep-alive connection or a stalled upload may wait

    def setup(self) -> None:
        super().setup()
        server = cast(_Server, self.server)
        with server.connections_lock:
            server.connections.add(self.connection)

    def finish(self) -> None:
        server = cast(_Server, self.server)
        with server.connections_lock:
            server.connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _dispatch(self) -> None:
        target = urlsplit(self.path)
        try:
            body = _Body(self.rfile, self.headers)
        except ValueError:
            self.close_connection = True
            self._reply(_problem(400, "Content-Length is not a valid length.").response)
            return
        path = target.path.rstrip("/") or "/"
        request = _Request(
            self.command, path, parse_qs(target.query, keep_blank_values=True), self.headers, body
        )
        response = cast(_Server, self.server).answer(request)
        if not body.drain():
            self.close_connection = True
        self._reply(response)

    def _reply(self, response: _Response) -> None:
        length = response.file.stat().st_size if response.file else len(response.body)
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(length))
        for name, value in response.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if response.file:
            with response.file.open("rb") as source:
                shutil.copyfileobj(source, self.wfile, _CHUNK_BYTES)
        else:
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - " + format, self.address_string(), *args)


class PlatformEmulator:
    """AEP's IMS token, Batch Ingestion and Catalog APIs on a loopback port, state on disk.

    State lives under ``state_dir``: ``catalog.json`` (datasets and batches, replaced atomically
    on every change), ``uploads/<batch>/<file>``, accepted records in
    ``datasets/<dataset>/<batch>.parquet`` and failed rows in ``diagnostics/<batch>.jsonl``. A
    new emulator on the same directory sees everything but the old access tokens; run one
    emulator per directory at a time.
    """

    max_file_bytes: int = MAX_FILE_BYTES  # per-file upload limit; tests may lower it

    def __init__(
        self,
        state_dir: Path,
        *,
        client_id: str = "local-sandbox-client",
        client_secret: str = "local-sandbox-client-secret",
        org_id: str = "LOCALSANDBOX@AdobeOrg",
        sandbox_name: str = "prod",
        tenant_id: str = "localsandbox",
        token_lifetime_seconds: int = 86399,
        processing_seconds: float = 0.2,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._state_dir = Path(state_dir)
        self._client_id = client_id
        self._client_secret = client_secret
        self._org_id = org_id
        self._sandbox_name = sandbox_name
        self._tenant_id = tenant_id
        self._token_lifetime = token_lifetime_seconds
        self._processing_seconds = processing_seconds
        self._host = host
        self._port = port
        self._lock = threading.RLock()
        self._tokens: dict[str, float] = {}
        self._faults: list[_Fault] = []
        self._request_log: list[RequestLogEntry] = []
        self._workers: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._routes: list[tuple[str, re.Pattern[str], _Route]] = [
            ("POST", re.compile(r"/ims/token/v3"), self._issue_token),
            ("POST", re.compile(r"/data/foundation/import/batches"), self._create_batch),
            (
                "PUT",
                re.compile(
                    r"/data/foundation/import/batches/(?P<batch>[^/]+)"
                    r"/datasets/(?P<dataset>[^/]+)/files/(?P<file>.+)"
                ),
                self._upload_file,
            ),
            (
                "POST",
                re.compile(r"/data/foundation/import/batches/(?P<batch>[^/]+)"),
                self._batch_action,
            ),
            ("GET", re.compile(r"/data/foundation/catalog/batches"), self._list_batches),
            (
                "GET",
                re.compile(r"/data/foundation/catalog/batches/(?P<batch>[^/]+)"),
                self._get_batch,
            ),
            (
                "GET",
                re.compile(r"/data/foundation/catalog/dataSets/(?P<dataset>[^/]+)"),
                self._get_dataset,
            ),
            (
                "GET",
                re.compile(r"/data/foundation/export/batches/(?P<batch>[^/]+)/failed"),
                self._failed_rows,
            ),
        ]
        self._datasets: dict[str, _Dataset] = {}
        self._batches: dict[str, _Batch] = {}
        self._tmp_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self._tmp_dir.iterdir():  # half-written files of an earlier crash
            leftover.unlink()
        self._load()

    # Lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        """Listen (on a free port when ``port`` is 0) and resume batches a crash interrupted."""
        if self._server is not None:
            raise RuntimeError("The platform emulator is already running.")
        self._stopping.clear()
        self._server = _Server((self._host, self._port), self._handle)
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long shutdown() may wait
            name="aep-emulator",
            daemon=True,
        )
        self._serve_thread.start()
        with self._lock:
            for batch in self._batches.values():
                if batch.status == "processing" or (
                    batch.status == "loading" and batch.complete_requested
                ):
                    self._start_processing(batch.id)
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and wait for the processing threads."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._serve_thread is not None:
            self._serve_thread.join()
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL of both IMS (``/ims/token/v3``) and the platform (``/data/...``)."""
        if self._server is None:
            raise RuntimeError("The platform emulator is not running: call start() first.")
        return f"http://{self._host}:{self._server.server_address[1]}"

    # Python API for tests and the demo ---------------------------------------------------

    def create_dataset(self, name: str) -> str:
        """The id of the ExperienceEvent dataset called ``name``, created on first use."""
        with self._lock:
            for dataset in self._datasets.values():
                if dataset.name == name:
                    return dataset.id
            now = _now_ms()
            dataset = _Dataset(id=secrets.token_hex(12), name=name, created=now, updated=now)
            self._datasets[dataset.id] = dataset
            self._save()
            return dataset.id

    def dataset_records(self, dataset_id: str) -> pd.DataFrame:
        """The records live in the dataset: those of ``success`` batches, in batch order."""
        with self._lock:
            if dataset_id not in self._datasets:
                raise KeyError(f"no dataset {dataset_id!r}")
            live = sorted(
                (
                    batch
                    for batch in self._batches.values()
                    if batch.dataset_id == dataset_id and batch.status == "success"
                ),
                key=lambda batch: (batch.created, batch.id),
            )
            # Read under the lock: a concurrent replay deletes its predecessors' files.
            tables = [pq.read_table(self._records_path(batch)) for batch in live]
        return pa.concat_tables([_RECORD_SCHEMA.empty_table(), *tables]).to_pandas()

    def batch(self, batch_id: str) -> dict[str, Any]:
        """The Catalog view of one batch (the value under its id in ``GET /catalog/batches/x``)."""
        with self._lock:
            if batch_id not in self._batches:
                raise KeyError(f"no batch {batch_id!r}")
            return self._batch_view(self._batches[batch_id])

    def batches(self, dataset_id: str) -> list[dict[str, Any]]:
        """The Catalog views of a dataset's batches, oldest first."""
        with self._lock:
            chosen = [batch for batch in self._batches.values() if batch.dataset_id == dataset_id]
            chosen.sort(key=lambda batch: (batch.created, batch.id))
            return [self._batch_view(batch) for batch in chosen]

    @property
    def request_log(self) -> list[RequestLogEntry]:
        """A snapshot of every answered request, oldest first."""
        with self._lock:
            return list(self._request_log)

    def queue_fault(
        self,
        method: str,
        path_prefix: str,
        status: int,
        count: int = 1,
        retry_after: int | None = None,
    ) -> None:
        """Answer the next ``count`` matching requests with ``status``, to exercise retries."""
        HTTPStatus(status)  # raises ValueError for a status HTTP does not define
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._faults.append(_Fault(method.upper(), path_prefix, status, count, retry_after))

    # Request handling ----------------------------------------------------------------------

    def _handle(self, request: _Request) -> _Response:
        """Answer one request; logged before the reply is sent so tests see it at once."""
        try:
            self._inject_fault(request)
            route, match = self._route(request)
            if request.path.startswith("/data/"):
                self._authorize(request.headers)
            response = route(request, match)
        except _ApiError as error:
            response = error.response
        except Exception:
            logger.exception("the platform emulator failed on %s %s", request.method, request.path)
            response = _problem(500, "The local platform failed; see its log.").response
        with self._lock:
            self._request_log.append(RequestLogEntry(request.method, request.path, response.status))
        return response

    def _inject_fault(self, request: _Request) -> None:
        with self._lock:
            fault = next(
                (
                    fault
                    for fault in self._faults
                    if fault.method == request.method and request.path.startswith(fault.path_prefix)
                ),
                None,
            )
            if fault is None:
                return
            fault.remaining -= 1
            if fault.remaining == 0:
                self._faults.remove(fault)
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        raise _problem(fault.status, "Fault queued on the local platform.", headers)

    def _route(self, request: _Request) -> tuple[_Route, re.Match[str]]:
        path_known = False
        for method, pattern, route in self._routes:
            match = pattern.fullmatch(request.path)
            if match and method == request.method:
                return route, match
            path_known = path_known or match is not None
        if path_known:
            raise _problem(405, f"{request.method} is not allowed on {request.path}.")
        raise _problem(404, f"No API at {request.path} on the local platform.")

    def _authorize(self, headers: Message) -> None:
        """What every platform call must carry: a live token, the API key, org and sandbox."""
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        with self._lock:
            expires = self._tokens.get(token.strip())
        if scheme.lower() != "bearer" or expires is None or expires <= time.monotonic():
            raise _gateway_error(401, "401013", "Oauth token is not valid")
        api_key = headers.get("x-api-key")
        if not api_key:
            raise _gateway_error(403, "403000", "Api Key is required (header x-api-key)")
        if api_key != self._client_id:
            raise _gateway_error(403, "403003", "Api Key is invalid (header x-api-key)")
        if headers.get("x-gw-ims-org-id") != self._org_id:
            raise _problem(
                403, "Header x-gw-ims-org-id is missing or is not the organisation of this client."
            )
        sandbox = headers.get("x-sandbox-name")
        if not sandbox:
            raise _problem(400, "Header x-sandbox-name is required.")
        if sandbox != self._sandbox_name:
            raise _problem(
                403, f"Header x-sandbox-name: the organisation has no sandbox {sandbox!r}."
            )

    # IMS -------------------------------------------------------------------------------------

    def _issue_token(self, request: _Request, match: re.Match[str]) -> _Response:
        if "client_id" in request.query or "client_secret" in request.query:
            raise _ims_error(
                400,
                "invalid_request",
                "Send client_id and client_secret in the form body, not the query string.",
            )
        if request.headers.get_content_type() != "application/x-www-form-urlencoded":
            raise _ims_error(
                400, "invalid_request", "The body must be application/x-www-form-urlencoded."
            )
        body = request.body.read_all(_MAX_FORM_BYTES).decode("utf-8", "replace")
        form = {key: values[-1] for key, values in parse_qs(body).items()}
        if form.get("grant_type") != "client_credentials":
            raise _ims_error(
                400,
                "unsupported_grant_type",
                "OAuth server-to-server credentials use grant_type=client_credentials.",
            )
        client_ok = secrets.compare_digest(
            form.get("client_id", "").encode(), self._client_id.encode()
        )
        secret_ok = secrets.compare_digest(
            form.get("client_secret", "").encode(), self._client_secret.encode()
        )
        if not (client_ok and secret_ok):
            raise _ims_error(401, "invalid_client", "invalid client_id or client_secret")
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._tokens = {key: expiry for key, expiry in self._tokens.items() if expiry > now}
            self._tokens[token] = now + self._token_lifetime
        return _json(
            200,
            {"access_token": token, "token_type": "bearer", "expires_in": self._token_lifetime},
        )

    # Batch Ingestion -------------------------------------------------------------------------

    def _create_batch(self, request: _Request, match: re.Match[str]) -> _Response:
        body = _json_body(request)
        input_format = body.get("inputFormat")
        if not isinstance(input_format, dict) or str(input_format.get("format")).lower() != "json":
            raise _problem(
                400, 'inputFormat.format must be "json": the local platform reads JSON lines only.'
            )
        if input_format.get("isMultiLineJson"):
            raise _problem(400, "isMultiLineJson is not supported: send one JSON object a line.")
        tags = body.get("tags", {})
        if not isinstance(tags, dict):
            raise _problem(400, "tags must be an object of tag names to lists of values.")
        tags = copy.deepcopy(tags)
        diagnostics = body.get("enableErrorDiagnostics")
        if diagnostics is not None:
            if not isinstance(diagnostics, bool):
                raise _problem(400, "enableErrorDiagnostics must be true or false.")
            tags["acp_enableErrorDiagnostics"] = diagnostics
        percent = body.get("partialIngestionPercent")
        if percent is not None:
            if (
                isinstance(percent, bool)
                or not isinstance(percent, int | float)
                or not 0 <= percent <= 100
            ):
                raise _problem(400, "partialIngestionPercent must be a number from 0 to 100.")
            tags["acp_partialIngestionPercent"] = percent
        external_id = body.get("externalId")
        if external_id is not None and not isinstance(external_id, str):
            raise _problem(400, "externalId must be a string.")
        dataset_id = body.get("datasetId")
        with self._lock:
            if not isinstance(dataset_id, str) or dataset_id not in self._datasets:
                raise _problem(400, f"datasetId {dataset_id!r} is not a dataset of this sandbox.")
            replay = self._checked_replay(body.get("replay"), dataset_id)
            now = _now_ms()
            batch = _Batch(
                id=_new_batch_id(),
                dataset_id=dataset_id,
                status="loading",
                created=now,
                updated=now,
                input_format=copy.deepcopy(input_format),
                tags=tags,
                diagnostics=bool(diagnostics) or bool(percent),
                partial_percent=float(percent or 0),
                external_id=external_id,
                replay=replay,
            )
            self._batches[batch.id] = batch
            self._save()
            return _json(201, self._batch_view(batch))

    def _checked_replay(self, replay: Any, dataset_id: str) -> dict[str, Any] | None:
        """The ``replay`` to store, once each predecessor is a ``$``-prefixed batch id."""
        if replay is None:
            return None
        predecessors = replay.get("predecessors") if isinstance(replay, dict) else None
        if not isinstance(predecessors, list) or not predecessors:
            raise _problem(400, 'replay.predecessors must list batch ids as "$<batchId>".')
        for reference in predecessors:
            if not isinstance(reference, str) or not reference.startswith("$"):
                raise _problem(
                    400, f'replay predecessor {reference!r} must be a batch id prefixed with "$".'
                )
            predecessor = self._batches.get(reference[1:])
            if predecessor is None:
                raise _problem(400, f"replay predecessor {reference[1:]!r} does not exist.")
            if predecessor.dataset_id != dataset_id:
                raise _problem(
                    400,
                    f"replay predecessor {predecessor.id} belongs to dataset "
                    f"{predecessor.dataset_id}, not {dataset_id}.",
                )
        reason = replay.get("reason", "replace")
        if reason != "replace":
            raise _problem(400, 'The local platform supports replay.reason "replace" only.')
        return {"predecessors": list(predecessors), "reason": reason}

    def _upload_file(self, request: _Request, match: re.Match[str]) -> _Response:
        batch_id, dataset_id = unquote(match["batch"]), unquote(match["dataset"])
        relative = _safe_relative_path(unquote(match["file"]))
        with self._lock:
            self._check_uploadable(batch_id, dataset_id)
        if request.headers.get_content_type() != "application/octet-stream":
            raise _problem(415, "Upload files as Content-Type application/octet-stream.")
        too_large = _problem(413, f"Files over {self.max_file_bytes} bytes need a large upload.")
        if request.body.length > self.max_file_bytes:
            raise too_large
        temp = self._temp_path()
        try:
            written = 0
            with temp.open("wb") as sink:
                for chunk in request.body.chunks():
                    written += len(chunk)
                    if written > self.max_file_bytes:
                        raise too_large
                    sink.write(chunk)
            with self._lock:
                self._check_uploadable(batch_id, dataset_id)
                target = self._uploads_dir / batch_id / relative
                replaced = target.exists()
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(temp, target)
                except (FileExistsError, NotADirectoryError, IsADirectoryError):
                    raise _problem(
                        400, f"File path {relative.as_posix()!r} clashes with another file's path."
                    ) from None
        finally:
            temp.unlink(missing_ok=True)
        return _Response(200 if replaced else 201)

    def _check_uploadable(self, batch_id: str, dataset_id: str) -> None:
        batch = self._batch_or_404(batch_id)
        if batch.dataset_id != dataset_id:
            raise _problem(
                400, f"Batch {batch_id} belongs to dataset {batch.dataset_id}, not {dataset_id}."
            )
        if batch.status != "loading" or batch.complete_requested:
            state = "completed" if batch.status == "loading" else batch.status
            raise _problem(
                400, f"Batch {batch_id} is {state}: files can only be added while it is loading."
            )

    def _batch_action(self, request: _Request, match: re.Match[str]) -> _Response:
        action = request.param("action")
        with self._lock:
            batch = self._batch_or_404(unquote(match["batch"]))
            if action == "COMPLETE":
                self._complete(batch)
            elif action == "ABORT":
                self._abort(batch)
            else:
                raise _problem(
                    400, f"Unsupported action {action!r}: the local platform has COMPLETE, ABORT."
                )
        return _Response(200)

    def _complete(self, batch: _Batch) -> None:
        """Start processing once; a retried COMPLETE is answered 200 again, as AEP documents."""
        if batch.status == "aborted":
            raise _problem(400, f"Batch {batch.id} was aborted and cannot be completed.")
        if batch.status == "loading" and not batch.complete_requested:
            batch.complete_requested = True
            batch.updated = _now_ms()
            self._save()
            self._start_processing(batch.id)

    def _abort(self, batch: _Batch) -> None:
        if batch.status == "aborted":
            return
        if batch.status != "loading" or batch.complete_requested:
            state = "completed" if batch.status == "loading" else batch.status
            raise _problem(400, f"Batch {batch.id} is {state} and can no longer be aborted.")
        batch.status = "aborted"
        batch.updated = _now_ms()
        self._save()

    # Catalog and diagnostics -----------------------------------------------------------------

    def _get_batch(self, request: _Request, match: re.Match[str]) -> _Response:
        with self._lock:
            batch = self._batch_or_404(unquote(match["batch"]))
            return _json(200, {batch.id: self._batch_view(batch)})

    def _list_batches(self, request: _Request, match: re.Match[str]) -> _Response:
        limit_text = request.param("limit") or "20"
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 100:
            raise _problem(400, "limit must be a whole number from 1 to 100.")
        direction, _, order_field = (request.param("orderBy") or "asc:created").rpartition(":")
        if direction not in ("", "asc", "desc") or order_field not in ("created", "updated"):
            raise _problem(400, "orderBy must be [asc:|desc:]created or [asc:|desc:]updated.")
        dataset_id = request.param("dataSet")
        external_id = request.param("externalId")
        statuses = {status for status in (request.param("status") or "").split(",") if status}
        with self._lock:
            chosen = [
                batch
                for batch in self._batches.values()
                if (dataset_id is None or batch.dataset_id == dataset_id)
                and (external_id is None or batch.external_id == external_id)
                and (not statuses or batch.status in statuses)
            ]
            chosen.sort(
                key=lambda batch: (getattr(batch, order_field), batch.id),
                reverse=direction == "desc",
            )
            return _json(
                200, {batch.id: self._batch_view(batch) for batch in chosen[: int(limit_text)]}
            )

    def _get_dataset(self, request: _Request, match: re.Match[str]) -> _Response:
        dataset_id = unquote(match["dataset"])
        with self._lock:
            dataset = self._datasets.get(dataset_id)
            if dataset is None:
                raise _problem(404, f"No dataset {dataset_id}.")
            view = {
                "name": dataset.name,
                "imsOrg": self._org_id,
                "created": dataset.created,
                "updated": dataset.updated,
                "schemaRef": {
                    "id": f"https://ns.adobe.com/{self._tenant_id}/schemas/{_SCHEMA_NAME}",
                    "contentType": _XED_CONTENT_TYPE,
                },
                "tags": {},
                "version": "1.0.0",
            }
            return _json(200, {dataset.id: view})

    def _failed_rows(self, request: _Request, match: re.Match[str]) -> _Response:
        """The rows a batch rejected, as JSON lines (empty while none are known)."""
        with self._lock:
            batch = self._batch_or_404(unquote(match["batch"]))
        path = self._diagnostics_path(batch.id)
        return _Response(
            200, content_type="application/x-ndjson", file=path if path.exists() else None
        )

    def _batch_view(self, batch: _Batch) -> dict[str, Any]:
        view: dict[str, Any] = {
            "id": batch.id,
            "imsOrg": self._org_id,
            "status": batch.status,
            "created": batch.created,
            "updated": batch.updated,
            "createdClient": self._client_id,
            "version": "1.0.0",
            "tags": copy.deepcopy(batch.tags),
            "relatedObjects": [{"type": "dataSet", "id": batch.dataset_id}],
            "inputFormat": copy.deepcopy(batch.input_format),
        }
        optional = {
            "externalId": batch.external_id,
            "replay": batch.replay,
            "started": batch.started,
            "completed": batch.completed,
            "recordCount": batch.record_count,
            "failedRecordCount": batch.failed_record_count,
            "metrics": batch.metrics,
            "errors": batch.errors,
        }
        view.update(
            {key: copy.deepcopy(value) for key, value in optional.items() if value is not None}
        )
        return view

    def _batch_or_404(self, batch_id: str) -> _Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise _problem(404, f"No batch {batch_id}.")
        return batch

    # Processing ------------------------------------------------------------------------------

    def _start_processing(self, batch_id: str) -> None:
        self._workers = [worker for worker in self._workers if worker.is_alive()]
        worker = threading.Thread(
            target=self._process, args=(batch_id,), name=f"aep-batch-{batch_id}", daemon=True
        )
        self._workers.append(worker)
        worker.start()

    def _process(self, batch_id: str) -> None:
        """AEP's asynchronous processing: wait, mark ``processing``, wait, validate and conclude.

        Stopping the emulator interrupts the waits; the next start resumes the batch.
        """
        if self._stopping.wait(self._processing_seconds / 2):
            return
        with self._lock:
            batch = self._batches[batch_id]
            batch.status = "processing"
            batch.started = batch.updated = _now_ms()
            self._save()
        if self._stopping.wait(self._processing_seconds / 2):
            return
        try:
            outcome = self._ingest(batch)
        except Exception as error:
            logger.exception("the platform emulator failed to process batch %s", batch_id)
            outcome = _Outcome(
                status="failed",
                metrics={},
                accepted=0,
                failed=0,
                errors=[{"code": "INGEST-500", "description": f"Local platform fault: {error}"}],
            )
        with self._lock:
            self._conclude(batch, outcome)

    def _ingest(self, batch: _Batch) -> _Outcome:
        """Validate every line of every uploaded file; publish the records only on success.

        Reads the batch's immutable fields without the lock: after COMPLETE nothing changes them.
        """
        upload_dir = self._uploads_dir / batch.id
        files = sorted(path for path in upload_dir.rglob("*") if path.is_file())
        failures: Counter[str] = Counter()
        accepted = 0
        now = datetime.now(UTC)
        records_temp, failed_temp = self._temp_path(), self._temp_path()
        try:
            with _RecordSink(records_temp, batch.id) as sink, failed_temp.open("wb") as failed_out:
                for path in files:
                    with path.open("rb") as source:
                        for raw in source:
                            line = raw.strip()
                            if not line:
                                continue
                            record, failed_row = self._validate(line, now)
                            if record is not None:
                                sink.add(record, line)
                                accepted += 1
                            elif failed_row is not None:
                                failures[failed_row["_errors"][0]["code"]] += 1
                                failed_out.write(orjson.dumps(failed_row) + b"\n")
            status, errors = _verdict(batch, len(files), accepted, failures)
            failed = sum(failures.values())
            if failed:
                self._diagnostics_path(batch.id).parent.mkdir(parents=True, exist_ok=True)
                os.replace(failed_temp, self._diagnostics_path(batch.id))
            if status == "success":
                self._records_path(batch).parent.mkdir(parents=True, exist_ok=True)
                os.replace(records_temp, self._records_path(batch))
            return _Outcome(
                status=status,
                metrics={
                    "inputByteSize": sum(path.stat().st_size for path in files),
                    "inputFileCount": len(files),
                    "inputRecordCount": accepted + failed,
                    "outputRecordCount": accepted if status == "success" else 0,
                    "failedRecordCount": failed,
                },
                accepted=accepted,
                failed=failed,
                errors=errors,
            )
        finally:
            records_temp.unlink(missing_ok=True)
            failed_temp.unlink(missing_ok=True)

    def _validate(
        self, line: bytes, now: datetime
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """``(record, None)`` for a record AEP accepts, else ``(None, failed row)``."""
        text = line.decode("utf-8", "replace")
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            return None, {
                "_corrupt_record": text,
                "_errors": [{"code": "1401", "message": _ROW_ERRORS["1401"]}],
            }
        problems = [
            ("1555", path, "null or empty value: AEP wants the field left out")
            for path in empty_value_paths(record)
        ]
        for error in schema_errors(record, self._tenant_id):
            path, _, message = error.partition(": ")
            code = "1555" if message.endswith("is a required property") else "1550"
            problems.append((code, path, message))
        timestamp = record.get("timestamp")
        if isinstance(timestamp, str) and _is_future(timestamp, now):
            problems.append(("1550", "timestamp", "in the future: an event must occur in the past"))
        if not problems:
            return record, None
        codes = sorted({code for code, _, _ in problems}, key=_ROW_CODE_ORDER.index)
        return None, {
            "_corrupt_record": text,
            "_errors": [{"code": code, "message": _ROW_ERRORS[code]} for code in codes],
            "_validationErrors": [
                {"code": code, "message": message, "pointerToViolation": _pointer(path)}
                for code, path, message in problems
            ],
        }

    def _conclude(self, batch: _Batch, outcome: _Outcome) -> None:
        """Record the outcome; a successful replay retires its predecessors and their records."""
        now = _now_ms()
        batch.status = outcome.status
        batch.updated = batch.completed = now
        batch.metrics = outcome.metrics or None
        batch.failed_record_count = outcome.failed
        batch.errors = outcome.errors or None
        if outcome.status == "success":
            batch.record_count = outcome.accepted
        retired: list[_Batch] = []
        if outcome.status == "success" and batch.replay:
            for reference in batch.replay["predecessors"]:
                predecessor = self._batches[reference[1:]]
                predecessor.status = "inactive"
                predecessor.updated = now
                successors = predecessor.tags.setdefault("acp_successor", [])
                if batch.id not in successors:
                    successors.append(batch.id)
                retired.append(predecessor)
        self._save()
        for predecessor in retired:
            self._records_path(predecessor).unlink(missing_ok=True)

    # Storage ---------------------------------------------------------------------------------

    @property
    def _catalog_path(self) -> Path:
        return self._state_dir / "catalog.json"

    @property
    def _tmp_dir(self) -> Path:
        return self._state_dir / "tmp"

    @property
    def _uploads_dir(self) -> Path:
        return self._state_dir / "uploads"

    def _records_path(self, batch: _Batch) -> Path:
        return self._state_dir / "datasets" / batch.dataset_id / f"{batch.id}.parquet"

    def _diagnostics_path(self, batch_id: str) -> Path:
        return self._state_dir / "diagnostics" / f"{batch_id}.jsonl"

    def _temp_path(self) -> Path:
        return self._tmp_dir / uuid.uuid4().hex

    def _load(self) -> None:
        if not self._catalog_path.exists():
            return
        catalog = orjson.loads(self._catalog_path.read_bytes())
        self._datasets = {key: _Dataset(**value) for key, value in catalog["datasets"].items()}
        self._batches = {key: _Batch(**value) for key, value in catalog["batches"].items()}

    def _save(self) -> None:
        """Write the catalog to a temporary file and rename it over the old one (atomic)."""
        catalog = {
            "datasets": {key: asdict(value) for key, value in self._datasets.items()},
            "batches": {key: asdict(value) for key, value in self._batches.items()},
        }
        temp = self._temp_path()
        temp.write_bytes(orjson.dumps(catalog, option=orjson.OPT_INDENT_2))
        os.replace(temp, self._catalog_path)


class _RecordSink:
    """Accepted records into one Parquet file, a row group at a time, so any batch size fits."""

    def __init__(self, path: Path, batch_id: str) -> None:
        self._writer = pq.ParquetWriter(path, _RECORD_SCHEMA)
        self._batch_id = batch_id
        self._rows: dict[str, list[str | None]] = {name: [] for name in _RECORD_SCHEMA.names}

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._flush()
        self._writer.close()

    def add(self, record: dict[str, Any], line: bytes) -> None:
        event_type = record.get("eventType")
        self._rows["_id"].append(record["_id"])
        self._rows["timestamp"].append(record["timestamp"])
        self._rows["eventType"].append(event_type if isinstance(event_type, str) else None)
        self._rows["batch_id"].append(self._batch_id)
        self._rows["record"].append(line.decode("utf-8"))
        if len(self._rows["_id"]) >= _ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self._rows["_id"]:
            self._writer.write_table(pa.table(self._rows, schema=_RECORD_SCHEMA))
            self._rows = {name: [] for name in _RECORD_SCHEMA.names}


def _verdict(
    batch: _Batch, file_count: int, accepted: int, failures: Counter[str]
) -> tuple[str, list[dict[str, Any]]]:
    """The batch's status and Catalog ``errors`` from its row counts and partial threshold."""
    failed = sum(failures.values())
    if accepted + failed == 0:
        description = (
            "The batch has no files: upload at least one before COMPLETE."
            if file_count == 0
            else "The batch's files hold no records."
        )
        return "failed", [{"code": "106", "description": description}]
    if not failed:
        return "success", []
    within = failed * 100 <= batch.partial_percent * (accepted + failed)
    status = "success" if within else "failed"
    summary = f"Encountered {failed} errors in the data. "
    summary += f"Successfully ingested {accepted if within else 0} rows."
    if not within:
        summary += (
            f" The errors exceed the batch's partial ingestion threshold of "
            f"{batch.partial_percent:g}%, so the whole batch failed."
        )
    if not batch.diagnostics:
        summary += " Resend the data with error diagnostics enabled to learn the failure types."
        return status, [{"code": "INGEST-1211-400", "description": summary, "recordCount": failed}]
    summary += " Review the batch's failed rows for details."
    return status, [
        {"code": "INGEST-1212-400", "description": summary, "recordCount": failed},
        *(
            {"code": f"INGEST-{code}-400", "description": _ROW_ERRORS[code], "recordCount": count}
            for code, count in sorted(
                failures.items(), key=lambda item: _ROW_CODE_ORDER.index(item[0])
            )
        ),
    ]


def _json_body(request: _Request) -> dict[str, Any]:
    if request.headers.get_content_type() != "application/json":
        raise _problem(415, "Send the body as Content-Type application/json.")
    try:
        body = orjson.loads(request.body.read_all(_MAX_FORM_BYTES))
    except orjson.JSONDecodeError:
        raise _problem(400, "The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise _problem(400, "The body must be a JSON object.")
    return body


def _safe_relative_path(file_path: str) -> Path:
    """The upload's path inside the batch; refuses anything that could escape it."""
    parts = file_path.split("/")
    if any(part in ("", ".", "..") or "\\" in part or "\x00" in part for part in parts):
        raise _problem(400, f"File path {file_path!r} is not a relative path of plain names.")
    return Path(*parts)


def _is_future(timestamp: str, now: datetime) -> bool:
    try:
        moment = datetime.fromisoformat(timestamp)
    except ValueError:
        return False  # schema_errors reports the malformed value
    return moment.tzinfo is not None and moment > now


def _pointer(path: str) -> str:
    """A validator path (``a/b/0`` or ``(record)``) as AEP's ``pointerToViolation``."""
    return "#" if path == "(record)" else f"#/{path}"


def _new_batch_id() -> str:
    """A ULID, as AEP's batch ids are: 48 bits of milliseconds, 80 random, Crockford base32."""
    value = (_now_ms() << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def _now_ms() -> int:
    return int(time.time() * 1000)
