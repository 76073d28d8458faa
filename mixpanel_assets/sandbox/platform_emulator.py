"""A loopback Adobe Experience Platform over real HTTP: IMS tokens, Batch Ingestion, Catalog,
Data Access diagnostics, the Schema Registry and Identity Service namespaces.

Why it exists: the AEP client is tested against real HTTP (status codes, headers, streamed
uploads, retries), provisioning runs against an empty platform, and ``make demo`` runs offline,
twice, showing each event once. The emulator follows AEP's documented contract, not our client's
habits: it validates every record with the project's XDM schema and rejects what AEP rejects
(nulls, empty values, schema violations, timestamps in the future), and it knows nothing of
Dagster.

Batch statuses: ``loading`` (created; files may be uploaded) -> COMPLETE -> ``processing`` (after
half of ``processing_seconds``) -> ``success`` or ``failed`` (after the other half). ``loading``
-> ABORT -> ``aborted``; ``loading`` untouched for ``abandon_after_seconds`` -> ``abandoned``.
``success`` -> a successful replay naming it -> ``inactive``: its records leave the dataset and
it gets the tag ``acp_successor``. The Catalog lists batches by dataset, ``externalId``, status
and tags (``tags=name:value``, ``*`` a wildcard), newest or oldest first, paged with ``start``.

Error codes. Failed rows (``GET /export/batches/{id}/failed`` lists the files, ``?path=`` reads
one): ``1401`` a line that is not a JSON object, ``1555`` a required field missing or a
null/empty value, ``1550`` any other schema violation or a timestamp in the future (1401 and
1555 are AEP's documented codes, 1550 is the emulator's own). Batch ``errors``:
``INGEST-1212-400`` (with error diagnostics) or ``INGEST-1211-400`` (without) summarise the
failed rows; with diagnostics they are followed by one ``INGEST-<row code>-400`` entry per row
code; ``106`` an empty batch; ``INGEST-500`` a fault of the emulator itself.

Schema Registry: the global container holds Adobe's ExperienceEvent class and field groups as
shipped in ``mixpanel_assets/xdm/schemas``; the tenant container takes field groups (custom
fields only under ``_<tenant>``), schemas of that class, and identity descriptors, and answers a
schema lookup raw (``xed+json``) or resolved (``xed-full+json``). Datasets are created on a
tenant schema.

Faults for tests: ``queue_fault`` answers the next matching requests with an error (before or
after handling them: a lost answer); ``fail_next_batch`` and ``reject_rows_of_next_batch`` make
AEP's processing fail a batch or reject some of its rows.
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

from mixpanel_assets.sandbox.batch_validation import (
    PARALLEL_MIN_BYTES,
    RECORD_SCHEMA,
    ROW_CODE_ORDER,
    ROW_ERRORS,
    Tally,
    part_path,
    record_parts,
    validate_batch,
)
from mixpanel_assets.sandbox.record_checks import record_schema
from mixpanel_assets.sandbox.xdm_registry import (
    CLASS_ID,
    EXPERIENCE_EVENT_FIELD_GROUPS,
    IDENTITY_MAP_FIELD_GROUP,
    compose,
    global_library,
    project_field_group,
)

logger = logging.getLogger(__name__)

MAX_FILE_BYTES = 256 * 1024 * 1024  # AEP's small-file upload limit
_MAX_FORM_BYTES = 1024 * 1024  # JSON and form bodies of the non-upload calls
_DRAIN_LIMIT = 64 * 1024 * 1024  # unread body left over: discard up to this, else close
_CHUNK_BYTES = 1024 * 1024
_LINE_LIMIT = 65536
_XED_CONTENT_TYPE = "application/vnd.adobe.xed+json;version=1"
_XED_FULL = "application/vnd.adobe.xed-full+json;version=1"
_XED_ID = "application/vnd.adobe.xed-id+json"
# Statuses a finished batch may reach later in AEP, outside any request of ours.
_LATER_STATUSES = frozenset({"archived", "retained", "deleted", "inactive"})
_ROW_ERROR_FILES = ("parsing_errors_0.json", "conversion_errors_0.json")
_DESCRIPTOR_FORMS = frozenset(
    f"application/vnd.adobe.xdm{suffix}+json" for suffix in ("", "-id", "-link")
)
# The global field groups a tenant schema may use.
_GLOBAL_FIELD_GROUPS = frozenset({IDENTITY_MAP_FIELD_GROUP, *EXPERIENCE_EVENT_FIELD_GROUPS})
# Names of the schema the ``create_dataset`` shortcut puts datasets on.
_BUILT_IN_FIELD_GROUP = "Mixpanel fields (local platform built-in)"
_BUILT_IN_SCHEMA = "Mixpanel ExperienceEvent (local platform built-in)"
_ID_TYPES = frozenset(
    {"COOKIE", "CROSS_DEVICE", "DEVICE", "EMAIL", "MOBILE", "NON_PEOPLE", "PHONE"}
)
# Identity namespaces every organisation has (code, id, name, idType).
_STANDARD_NAMESPACES = (
    ("ECID", 4, "Experience Cloud ID", "COOKIE"),
    ("Email", 6, "Email", "EMAIL"),
    ("Phone", 7, "Phone", "PHONE"),
)
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


@dataclass(frozen=True)
class RequestLogEntry:
    """One answered request (``path`` without the query), so tests can assert on retries."""

    method: str
    path: str
    status: int
    accept: str = ""  # the request's Accept header


@dataclass
class _Fault:
    method: str
    path_prefix: str
    status: int
    remaining: int
    retry_after: int | None
    after_handling: bool


@dataclass
class _BatchFault:
    """What AEP's processing does to the next completed batch."""

    failure: dict[str, str] | None = None  # the batch fails with this error
    rejected_rows: int = 0  # this many otherwise valid rows are rejected


@dataclass
class _Dataset:
    id: str
    name: str
    created: int
    updated: int
    schema_id: str = ""  # "" in catalogs written before datasets had schemas
    description: str = ""


@dataclass
class _RegistryResource:
    """A tenant field group or schema: ``body`` as posted, plus what the registry assigns."""

    id: str
    kind: str  # "fieldgroups" or "schemas"
    body: dict[str, Any]
    created: int


@dataclass
class _Descriptor:
    id: str
    body: dict[str, Any]
    created: int


@dataclass
class _Namespace:
    id: int
    code: str
    name: str
    description: str
    id_type: str
    created: int


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


def _fault_error(fault: _Fault) -> _ApiError:
    headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
    return _problem(fault.status, "Fault queued on the local platform.", headers)


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
    """AEP's platform APIs on a loopback port, state on disk.

    State lives under ``state_dir``: ``catalog.json`` (datasets, batches, Schema Registry
    resources, descriptors and namespaces, replaced atomically on every change),
    ``uploads/<batch>/<file>``, accepted records in Parquet parts
    ``datasets/<dataset>/<batch>/part-<n>.parquet`` (one per slice of the batch that a process
    validated) and failed rows in ``diagnostics/<batch>.jsonl``. A new emulator on the same
    directory sees everything but the old access tokens; run one emulator per directory at a
    time.

    A completed batch of at least ``parallel_min_bytes`` is validated by one worker process per
    usable CPU (tests lower it to take that path with little data); a smaller one in a thread
    of this process.
    """

    max_file_bytes: int = MAX_FILE_BYTES  # per-file upload limit; tests may lower it
    # False: the Catalog's batch list ignores its ``tags`` filter (a defect a client must survive).
    honours_tag_filter: bool = True
    # The most descriptors one ``-v2`` page holds, whatever ``limit`` asks (500 in AEP's docs).
    descriptor_page_limit: int = 500

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
        abandon_after_seconds: float = 86400.0,
        parallel_min_bytes: int = PARALLEL_MIN_BYTES,
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
        self._abandon_after_ms = int(abandon_after_seconds * 1000)
        self._parallel_min_bytes = parallel_min_bytes
        self._host = host
        self._port = port
        self._lock = threading.RLock()
        self._tokens: dict[str, float] = {}
        self._faults: list[_Fault] = []
        self._batch_faults: list[_BatchFault] = []
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
            ("GET", re.compile(r"/data/foundation/catalog/dataSets"), self._list_datasets),
            ("POST", re.compile(r"/data/foundation/catalog/dataSets"), self._create_dataset),
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
            (
                "GET",
                re.compile(r"/data/foundation/export/batches/(?P<batch>[^/]+)/meta"),
                self._batch_meta,
            ),
            ("GET", re.compile(r"/data/foundation/schemaregistry/stats"), self._registry_stats),
            (
                "GET",
                re.compile(r"/data/foundation/schemaregistry/tenant/(?P<kind>fieldgroups|schemas)"),
                self._list_resources,
            ),
            (
                "POST",
                re.compile(r"/data/foundation/schemaregistry/tenant/(?P<kind>fieldgroups|schemas)"),
                self._create_resource,
            ),
            (
                "GET",
                re.compile(
                    r"/data/foundation/schemaregistry/tenant/(?P<kind>fieldgroups|schemas)/(?P<id>.+)"
                ),
                self._get_resource,
            ),
            (
                "GET",
                re.compile(r"/data/foundation/schemaregistry/tenant/descriptors"),
                self._list_descriptors,
            ),
            (
                "POST",
                re.compile(r"/data/foundation/schemaregistry/tenant/descriptors"),
                self._create_descriptor,
            ),
            ("GET", re.compile(r"/data/core/idnamespace/identities"), self._list_namespaces),
            ("POST", re.compile(r"/data/core/idnamespace/identities"), self._create_namespace),
        ]
        self._datasets: dict[str, _Dataset] = {}
        self._batches: dict[str, _Batch] = {}
        self._registry: dict[str, _RegistryResource] = {}
        self._descriptors: dict[str, _Descriptor] = {}
        self._namespaces: dict[str, _Namespace] = {}
        self._tmp_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self._tmp_dir.iterdir():  # half-written files of an earlier crash
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
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
        """The id of the dataset called ``name``, created on first use on a built-in schema of
        the ExperienceEvent class, the mapping's field groups and the ``_<tenant>.mixpanel``
        fields: a shortcut past the Schema Registry for tests of ingestion alone."""
        with self._lock:
            for dataset in self._datasets.values():
                if dataset.name == name:
                    return dataset.id
            dataset = self._new_dataset(name, self._built_in_schema_id(), "")
            self._save()
            return dataset.id

    def dataset_records(self, dataset_id: str) -> pd.DataFrame:
        """The records live in the dataset: those of ``success`` (or ``retained``) batches, in
        batch order."""
        with self._lock:
            if dataset_id not in self._datasets:
                raise KeyError(f"no dataset {dataset_id!r}")
            live = sorted(
                (
                    batch
                    for batch in self._batches.values()
                    if batch.dataset_id == dataset_id and batch.status in ("success", "retained")
                ),
                key=lambda batch: (batch.created, batch.id),
            )
            # Read under the lock: a concurrent replay deletes its predecessors' files.
            tables = [
                pq.read_table(part)
                for batch in live
                for part in record_parts(self._records_path(batch))
            ]
        return pa.concat_tables([RECORD_SCHEMA.empty_table(), *tables]).to_pandas()

    def batch(self, batch_id: str) -> dict[str, Any]:
        """The Catalog view of one batch (the value under its id in ``GET /catalog/batches/x``)."""
        with self._lock:
            if batch_id not in self._batches:
                raise KeyError(f"no batch {batch_id!r}")
            self._abandon_stale_batches()
            return self._batch_view(self._batches[batch_id])

    def batches(self, dataset_id: str) -> list[dict[str, Any]]:
        """The Catalog views of a dataset's batches, oldest first."""
        with self._lock:
            self._abandon_stale_batches()
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
        after_handling: bool = False,
    ) -> None:
        """Answer the next ``count`` matching requests with ``status``, to exercise retries.

        With ``after_handling`` the request is carried out first and only its answer is lost, as
        when a connection breaks after AEP acted: a client must not assume nothing happened.
        """
        HTTPStatus(status)  # raises ValueError for a status HTTP does not define
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._faults.append(
                _Fault(method.upper(), path_prefix, status, count, retry_after, after_handling)
            )

    def fail_next_batch(self, code: str, description: str) -> None:
        """AEP's processing fails the next completed batch with this error; no record lands."""
        with self._lock:
            self._batch_faults.append(
                _BatchFault(failure={"code": code, "description": description})
            )

    def set_batch_status(self, batch_id: str, status: str) -> None:
        """Move a finished batch on as AEP's own lifecycle may (``archived`` to cold storage,
        ``retained``, ``deleted``): the Catalog shows the new status from now on."""
        if status not in _LATER_STATUSES:
            raise ValueError(f"status must be one of {sorted(_LATER_STATUSES)}")
        with self._lock:
            batch = self._batch_or_404(batch_id)
            batch.status = status
            batch.updated = _now_ms()
            self._save()

    def reject_rows_of_next_batch(self, count: int) -> None:
        """AEP's processing rejects the first ``count`` valid rows of the next completed batch,
        as the failed-row diagnostics show; the batch's partial-ingestion threshold decides."""
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._batch_faults.append(_BatchFault(rejected_rows=count))

    # Request handling ----------------------------------------------------------------------

    def _handle(self, request: _Request) -> _Response:
        """Answer one request; logged before the reply is sent so tests see it at once."""
        try:
            fault = self._take_fault(request)
            if fault is not None and not fault.after_handling:
                raise _fault_error(fault)
            route, match = self._route(request)
            if request.path.startswith("/data/"):
                self._authorize(request.headers)
            response = route(request, match)
            if fault is not None:
                raise _fault_error(fault)
        except _ApiError as error:
            response = error.response
        except Exception:
            logger.exception("the platform emulator failed on %s %s", request.method, request.path)
            response = _problem(500, "The local platform failed; see its log.").response
        with self._lock:
            self._request_log.append(
                RequestLogEntry(
                    request.method,
                    request.path,
                    response.status,
                    request.headers.get("Accept", ""),
                )
            )
        return response

    def _take_fault(self, request: _Request) -> _Fault | None:
        with self._lock:
            fault = next(
                (
                    fault
                    for fault in self._faults
                    if fault.method == request.method and request.path.startswith(fault.path_prefix)
                ),
                None,
            )
            if fault is not None:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
            return fault

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
            tags["acp_enableErrorDiagnostics"] = [str(diagnostics).lower()]
        percent = body.get("partialIngestionPercent")
        if percent is not None:
            if (
                isinstance(percent, bool)
                or not isinstance(percent, int | float)
                or not 0 <= percent <= 100
            ):
                raise _problem(400, "partialIngestionPercent must be a number from 0 to 100.")
            tags["acp_partialIngestionPercent"] = [f"{percent:g}"]
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
                input_format={**copy.deepcopy(input_format), "format": "json"},
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
            return _json(200, self._batch_view(batch))

    def _complete(self, batch: _Batch) -> None:
        """Start processing once; a retried COMPLETE is answered 200 again, as AEP documents."""
        if batch.status in ("aborted", "abandoned"):
            raise _problem(400, f"Batch {batch.id} was {batch.status} and cannot be completed.")
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
        limit = _whole_number(request.param("limit") or "20", "limit", 1, 100)
        start = _whole_number(request.param("start") or "0", "start", 0, None)
        direction, _, order_field = (request.param("orderBy") or "asc:created").rpartition(":")
        if direction not in ("", "asc", "desc") or order_field not in ("created", "updated"):
            raise _problem(400, "orderBy must be [asc:|desc:]created or [asc:|desc:]updated.")
        dataset_id = request.param("dataSet")
        external_id = request.param("externalId")
        statuses = {status for status in (request.param("status") or "").split(",") if status}
        tag_filters = _tag_filters(request.param("tags"))
        with self._lock:
            self._abandon_stale_batches()
            chosen = [
                batch
                for batch in self._batches.values()
                if (dataset_id is None or batch.dataset_id == dataset_id)
                and (external_id is None or batch.external_id == external_id)
                and (not statuses or batch.status in statuses)
                and (
                    not self.honours_tag_filter
                    or all(_has_tag(batch.tags, name, pattern) for name, pattern in tag_filters)
                )
            ]
            chosen.sort(
                key=lambda batch: (getattr(batch, order_field), batch.id),
                reverse=direction == "desc",
            )
            page = chosen[start : start + limit]
            return _json(200, {batch.id: self._batch_view(batch) for batch in page})

    def _list_datasets(self, request: _Request, match: re.Match[str]) -> _Response:
        limit = _whole_number(request.param("limit") or "20", "limit", 1, 100)
        start = _whole_number(request.param("start") or "0", "start", 0, None)
        name = request.param("name")
        matches_name = _name_condition(name) if name is not None else None
        with self._lock:
            chosen = [
                dataset
                for dataset in sorted(self._datasets.values(), key=lambda item: item.created)
                if matches_name is None or matches_name(dataset.name)
            ]
            page = chosen[start : start + limit]
            views = {dataset.id: self._dataset_view(dataset) for dataset in page}
        properties = request.param("properties")
        return _json(200, {key: _select(view, properties) for key, view in views.items()})

    def _create_dataset(self, request: _Request, match: re.Match[str]) -> _Response:
        body = _json_body(request)
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _problem(400, "name is required: a non-empty string.")
        schema_ref = body.get("schemaRef")
        if not isinstance(schema_ref, dict) or not isinstance(schema_ref.get("id"), str):
            raise _problem(400, "schemaRef.id is required: the $id of the dataset's XDM schema.")
        if schema_ref.get("contentType") != _XED_CONTENT_TYPE:
            raise _problem(400, f"schemaRef.contentType must be {_XED_CONTENT_TYPE}.")
        with self._lock:
            schema = self._registry.get(schema_ref["id"])
            if schema is None or schema.kind != "schemas":
                raise _problem(400, f"schemaRef.id {schema_ref['id']!r} is not a tenant schema.")
            dataset = self._new_dataset(name, schema.id, str(body.get("description", "")))
            self._save()
        return _json(201, [f"@/dataSets/{dataset.id}"])

    def _get_dataset(self, request: _Request, match: re.Match[str]) -> _Response:
        dataset_id = unquote(match["dataset"])
        with self._lock:
            dataset = self._datasets.get(dataset_id)
            if dataset is None:
                raise _problem(404, f"No dataset {dataset_id}.")
            view = self._dataset_view(dataset)
        return _json(200, {dataset.id: _select(view, request.param("properties"))})

    def _dataset_view(self, dataset: _Dataset) -> dict[str, Any]:
        return {
            "name": dataset.name,
            "description": dataset.description,
            "imsOrg": self._org_id,
            "created": dataset.created,
            "updated": dataset.updated,
            "schemaRef": {"id": dataset.schema_id, "contentType": _XED_CONTENT_TYPE},
            "tags": {},
            "version": "1.0.0",
        }

    def _new_dataset(self, name: str, schema_id: str, description: str) -> _Dataset:
        now = _now_ms()
        dataset = _Dataset(
            id=secrets.token_hex(12),
            name=name,
            created=now,
            updated=now,
            schema_id=schema_id,
            description=description,
        )
        self._datasets[dataset.id] = dataset
        return dataset

    def _failed_rows(self, request: _Request, match: re.Match[str]) -> _Response:
        """Without ``path``, the failed batch's failed-row files; with it, that file's rows.

        A batch that went live despite failed rows (partial ingestion) lists none here: its rows
        are in the ``row_errors`` meta files.
        """
        with self._lock:
            batch = self._batch_or_404(unquote(match["batch"]))
            live = batch.status != "failed"
        path = self._diagnostics_path(batch.id)
        name = request.param("path")
        if name is None:
            size = path.stat().st_size if path.exists() and not live else 0
            listing = [{"name": "_SUCCESS", "length": "0"}]
            if size:
                listing.append({"name": path.name, "length": str(size)})
            for entry in listing:
                link = f"{self.url}{request.path}?path={entry['name']}"
                entry["_links"] = {"self": {"href": link}}
            return _json(200, {"data": listing, "_page": {"limit": 100, "count": len(listing)}})
        if name == "_SUCCESS":
            return _Response(200, content_type="application/octet-stream")
        if name != path.name or not path.exists() or live:
            raise _problem(404, f"Batch {batch.id} has no failed-row file {name!r}.")
        return _Response(200, content_type="application/x-ndjson", file=path)

    def _batch_meta(self, request: _Request, match: re.Match[str]) -> _Response:
        """``path=row_errors`` lists the batch's row-error files; ``row_errors/<name>`` reads one
        (kept when the batch had error diagnostics: AEP's partial-ingestion diagnostics)."""
        with self._lock:
            batch = self._batch_or_404(unquote(match["batch"]))
        folder = self._row_errors_dir(batch.id)
        name = request.param("path")
        if name is None:
            raise _problem(400, "path is required, e.g. path=row_errors or path=input_files.")
        if name.rstrip("/") == "row_errors":
            files = sorted(folder.iterdir()) if folder.exists() else []
            listing = [
                {
                    "name": file.name,
                    "length": str(file.stat().st_size),
                    "_links": {
                        "self": {"href": f"{self.url}{request.path}?path=row_errors%2F{file.name}"}
                    },
                }
                for file in files
            ]
            return _json(200, {"data": listing, "_page": {"limit": 100, "count": len(listing)}})
        folder_name, _, file_name = name.partition("/")
        file = folder / file_name
        if folder_name != "row_errors" or file_name not in _ROW_ERROR_FILES or not file.exists():
            raise _problem(404, f"Batch {batch.id} has no meta file {name!r}.")
        return _Response(200, content_type="application/json", file=file)

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
        self._abandon_stale_batches()
        return batch

    def _abandon_stale_batches(self) -> None:
        """``loading`` batches nobody completed in time are ``abandoned``, as AEP does."""
        now = _now_ms()
        stale = [
            batch
            for batch in self._batches.values()
            if batch.status == "loading"
            and not batch.complete_requested
            and now - batch.updated >= self._abandon_after_ms
        ]
        for batch in stale:
            batch.status = "abandoned"
            batch.updated = now
            batch.errors = [
                {
                    "code": "INGEST-ABANDONED",
                    "description": "The batch was not completed in the expected timeframe.",
                }
            ]
        if stale:
            self._save()

    # Schema Registry -------------------------------------------------------------------------

    def _registry_stats(self, request: _Request, match: re.Match[str]) -> _Response:
        with self._lock:
            counts = Counter(resource.kind for resource in self._registry.values())
        return _json(
            200,
            {
                "imsOrg": self._org_id,
                "tenantId": self._tenant_id,
                "counts": {"schemas": counts["schemas"], "mixins": counts["fieldgroups"]},
            },
        )

    def _list_resources(self, request: _Request, match: re.Match[str]) -> _Response:
        """The tenant's field groups or schemas: summaries (xed-id) or as stored (xed)."""
        accept = _media_type(request.headers.get("Accept"))
        if accept not in (_XED_ID, _XED_CONTENT_TYPE.partition(";")[0]):
            raise _problem(406, f"Send Accept: {_XED_ID} or {_XED_CONTENT_TYPE}.")
        condition = _property_condition(request.param("property"))
        with self._lock:
            views = [
                self._resource_view(resource)
                for resource in sorted(self._registry.values(), key=lambda item: item.created)
                if resource.kind == match["kind"]
            ]
        if condition is not None:
            views = [view for view in views if condition(view)]
        if accept == _XED_ID:
            summary = ("$id", "meta:altId", "version", "title")
            views = [{key: view[key] for key in summary} for view in views]
        return _json(
            200,
            {"results": views, "_page": {"orderby": "title", "next": None, "count": len(views)}},
        )

    def _get_resource(self, request: _Request, match: re.Match[str]) -> _Response:
        """One field group or schema, as stored (xed) or with its references resolved (xed-full)."""
        accept = _media_type(request.headers.get("Accept"), keep_version=True)
        if accept not in (_XED_CONTENT_TYPE, _XED_FULL):
            raise _problem(
                406, f"A lookup needs Accept: {_XED_CONTENT_TYPE} or {_XED_FULL} (with version)."
            )
        with self._lock:
            resource = self._resource_or_404(match["kind"], unquote(match["id"]))
            view = self._resource_view(resource)
            if accept == _XED_FULL:
                view = {
                    **{key: value for key, value in view.items() if key != "allOf"},
                    **self._resolved(resource),
                }
        return _json(200, view)

    def _create_resource(self, request: _Request, match: re.Match[str]) -> _Response:
        body = _json_body(request)
        kind = match["kind"]
        title = body.get("title")
        if not isinstance(title, str) or not title.strip():
            raise _problem(400, "title is required: a non-empty string.")
        if body.get("type") != "object":
            raise _problem(400, 'type must be "object".')
        with self._lock:
            if any(
                resource.kind == kind and resource.body.get("title") == title
                for resource in self._registry.values()
            ):
                raise _problem(409, f"The tenant already has {kind} titled {title!r}.")
            if kind == "fieldgroups":
                self._check_field_group(body)
            else:
                self._check_schema(body)
            resource = self._add_resource(kind, body)
            self._save()
            return _json(201, self._resource_view(resource))

    def _check_field_group(self, body: dict[str, Any]) -> None:
        extends = body.get("meta:intendedToExtend")
        if not isinstance(extends, list) or not extends:
            raise _problem(400, "meta:intendedToExtend must list the classes it may extend.")
        definitions = body.get("definitions")
        if not isinstance(definitions, dict) or not definitions:
            raise _problem(400, "definitions must hold the field group's fields.")
        for name, definition in definitions.items():
            fields = definition.get("properties", {}) if isinstance(definition, dict) else None
            if not isinstance(fields, dict) or set(fields) - {f"_{self._tenant_id}"}:
                raise _problem(
                    400,
                    f"definitions/{name}: custom fields must be nested under the tenant object "
                    f"_{self._tenant_id}.",
                )
        for part in _all_of(body):
            reference = part.get("$ref", "")
            if not reference.startswith("#/definitions/") or reference[14:] not in definitions:
                raise _problem(400, f"allOf entry {part!r} must refer to #/definitions/<name>.")

    def _check_schema(self, body: dict[str, Any]) -> None:
        references = [part.get("$ref") for part in _all_of(body)]
        classes = [reference for reference in references if reference == CLASS_ID]
        if len(classes) != 1:
            raise _problem(400, f"allOf must refer to exactly one class: {CLASS_ID}.")
        for reference in references:
            if reference == CLASS_ID or reference in _GLOBAL_FIELD_GROUPS:
                continue
            field_group = self._registry.get(str(reference))
            if field_group is None or field_group.kind != "fieldgroups":
                raise _problem(400, f"allOf entry {reference!r} is not a known field group.")
            if CLASS_ID not in field_group.body.get("meta:intendedToExtend", []):
                raise _problem(400, f"Field group {reference} does not extend {CLASS_ID}.")

    def _add_resource(self, kind: str, body: dict[str, Any]) -> _RegistryResource:
        noun = "mixins" if kind == "fieldgroups" else "schemas"
        resource = _RegistryResource(
            id=f"https://ns.adobe.com/{self._tenant_id}/{noun}/{secrets.token_hex(16)}",
            kind=kind,
            body=copy.deepcopy(body),
            created=_now_ms(),
        )
        self._registry[resource.id] = resource
        return resource

    def _resource_or_404(self, kind: str, reference: str) -> _RegistryResource:
        for resource in self._registry.values():
            if resource.kind == kind and reference in (resource.id, _alt_id(resource.id)):
                return resource
        raise _problem(404, f"No {kind} resource {reference} in the tenant container.")

    def _resource_view(self, resource: _RegistryResource) -> dict[str, Any]:
        view = copy.deepcopy(resource.body)
        view.update(
            {
                "$id": resource.id,
                "meta:altId": _alt_id(resource.id),
                "meta:resourceType": "mixins" if resource.kind == "fieldgroups" else "schemas",
                "meta:containerId": "tenant",
                "meta:tenantNamespace": f"_{self._tenant_id}",
                "imsOrg": self._org_id,
                "version": "1.0",
            }
        )
        if resource.kind == "schemas":
            references = [part["$ref"] for part in _all_of(resource.body)]
            view["meta:class"] = CLASS_ID
            view["meta:extends"] = references
        return view

    def _resolved(self, resource: _RegistryResource) -> dict[str, Any]:
        """``properties`` and ``required`` of the resource with every $ref and allOf merged in."""
        return compose(resource.body, {**global_library(), **self._tenant_documents()})

    def _tenant_documents(self) -> dict[str, dict[str, Any]]:
        return {
            key: resource.body
            for key, resource in self._registry.items()
            if resource.kind == "fieldgroups"
        }

    def _built_in_schema_id(self) -> str:
        """The schema behind ``create_dataset``, registered on first use."""
        for resource in self._registry.values():
            if resource.kind == "schemas" and resource.body["title"] == _BUILT_IN_SCHEMA:
                return resource.id
        field_group = self._add_resource(
            "fieldgroups",
            {
                "title": _BUILT_IN_FIELD_GROUP,
                "type": "object",
                "meta:intendedToExtend": [CLASS_ID],
                "definitions": {"mixpanel": project_field_group(self._tenant_id)},
                "allOf": [{"$ref": "#/definitions/mixpanel"}],
            },
        )
        references = [
            CLASS_ID,
            IDENTITY_MAP_FIELD_GROUP,
            *EXPERIENCE_EVENT_FIELD_GROUPS,
            field_group.id,
        ]
        schema = self._add_resource(
            "schemas",
            {
                "title": _BUILT_IN_SCHEMA,
                "type": "object",
                "allOf": [{"$ref": reference} for reference in references],
            },
        )
        return schema.id

    def _list_descriptors(self, request: _Request, match: re.Match[str]) -> _Response:
        """Descriptors as objects (xdm+json), ids (xdm-id+json) or paths (xdm-link+json), grouped
        by ``@type``; with ``-v2`` (``xdm-v2+json``...) a page of ``results`` and ``_page``."""
        accept = _media_type(request.headers.get("Accept"))
        paged = accept.startswith("application/vnd.adobe.xdm-v2")
        form = accept.replace("xdm-v2", "xdm", 1)
        if form not in _DESCRIPTOR_FORMS:
            raise _problem(
                400,
                "The Accept header must be one of application/vnd.adobe.xdm[-v2][-id|-link]+json "
                "(no version) for the descriptors endpoint.",
            )
        condition = _property_condition(request.param("property"))
        with self._lock:
            descriptors = [
                {**descriptor.body, "@id": descriptor.id, "meta:containerId": "tenant"}
                for descriptor in self._descriptors.values()
            ]
        if condition is not None:
            descriptors = [item for item in descriptors if condition(item)]
        if not paged:
            grouped: dict[str, list[Any]] = {}
            for item in sorted(descriptors, key=lambda item: item["@id"]):
                grouped.setdefault(item["@type"], []).append(_descriptor_entry(item, form))
            return _json(200, grouped)
        limit = _whole_number(request.param("limit") or "300", "limit", 0, 500)
        limit = min(limit, self.descriptor_page_limit)
        order = request.param("orderby") or "@id"
        field_name = order.removeprefix("-")
        if field_name not in ("@id", "@type", "xdm:sourceSchema"):
            raise _problem(400, "orderby must be [-]@id, [-]@type or [-]xdm:sourceSchema.")
        descending = order.startswith("-")

        def value(item: dict[str, Any]) -> str:
            return str(item.get(field_name))

        descriptors.sort(key=lambda item: (value(item), item["@id"]), reverse=descending)
        start = request.param("start")
        if start is not None:  # where the page begins: the previous page's ``_page.next``
            descriptors = [
                item
                for item in descriptors
                if (value(item) <= start if descending else value(item) >= start)
            ]
        page, rest = descriptors[:limit], descriptors[limit:]
        return _json(
            200,
            {
                "results": [_descriptor_entry(item, form) for item in page],
                "_page": {
                    "orderby": order,
                    "next": value(rest[0]) if rest and page else None,
                    "count": len(page),
                },
            },
        )

    def _create_descriptor(self, request: _Request, match: re.Match[str]) -> _Response:
        body = _json_body(request)
        if body.get("@type") != "xdm:descriptorIdentity":
            raise _problem(400, "The local platform supports xdm:descriptorIdentity only.")
        with self._lock:
            schema = self._registry.get(str(body.get("xdm:sourceSchema")))
            if schema is None or schema.kind != "schemas":
                raise _problem(400, "xdm:sourceSchema must be the $id of a tenant schema.")
            if body.get("xdm:sourceVersion") != 1:
                raise _problem(400, "xdm:sourceVersion must be the schema's major version, 1.")
            self._check_identity_field(schema, body.get("xdm:sourceProperty"))
            namespace = body.get("xdm:namespace")
            if body.get("xdm:property") not in ("xdm:code", "xdm:id"):
                raise _problem(400, 'xdm:property must be "xdm:code" or "xdm:id".')
            if not any(namespace in (known.code, known.id) for known in self._all_namespaces()):
                raise _problem(400, f"xdm:namespace {namespace!r} is not an identity namespace.")
            if body.get("xdm:isPrimary") and any(
                other.body["xdm:sourceSchema"] == schema.id and other.body.get("xdm:isPrimary")
                for other in self._descriptors.values()
            ):
                raise _problem(400, "Schemas may contain only one primary identity.")
            descriptor = _Descriptor(id=secrets.token_hex(20), body=body, created=_now_ms())
            self._descriptors[descriptor.id] = descriptor
            self._save()
        return _json(201, {**body, "meta:containerId": "tenant", "@id": descriptor.id})

    def _check_identity_field(self, schema: _RegistryResource, pointer: Any) -> None:
        if not isinstance(pointer, str) or not pointer.startswith("/") or pointer.endswith("/"):
            raise _problem(400, "xdm:sourceProperty must be a path like /a/b.")
        node: Any = {"properties": self._resolved(schema)["properties"]}
        for name in pointer[1:].split("/"):
            node = node.get("properties", {}).get(name) if isinstance(node, dict) else None
        if not isinstance(node, dict) or node.get("type") != "string":
            raise _problem(
                400, f"xdm:sourceProperty {pointer} is not a string field of the schema."
            )

    # Identity Service ------------------------------------------------------------------------

    def _list_namespaces(self, request: _Request, match: re.Match[str]) -> _Response:
        with self._lock:
            return _json(200, [self._namespace_view(item) for item in self._all_namespaces()])

    def _create_namespace(self, request: _Request, match: re.Match[str]) -> _Response:
        body = _json_body(request)
        code, name = body.get("code"), body.get("name")
        if not isinstance(code, str) or not re.fullmatch(r"[A-Za-z0-9_]+", code):
            raise _problem(400, "code is required: letters, digits and underscores.")
        if not isinstance(name, str) or not name.strip():
            raise _problem(400, "name is required: a non-empty string.")
        id_type = str(body.get("idType", "")).upper()
        if id_type not in _ID_TYPES:
            raise _problem(400, f"idType must be one of {', '.join(sorted(_ID_TYPES))}.")
        with self._lock:
            if any(known.code.lower() == code.lower() for known in self._all_namespaces()):
                raise _problem(409, f"An identity namespace with code {code!r} exists.")
            namespace = _Namespace(
                id=10_000_000 + len(self._namespaces),
                code=code,
                name=name,
                description=str(body.get("description", "")),
                id_type=id_type,
                created=_now_ms(),
            )
            self._namespaces[code] = namespace
            self._save()
            return _json(200, self._namespace_view(namespace))

    def _all_namespaces(self) -> list[_Namespace]:
        standard = [
            _Namespace(id=number, code=code, name=name, description="", id_type=kind, created=0)
            for code, number, name, kind in _STANDARD_NAMESPACES
        ]
        return [*standard, *self._namespaces.values()]

    def _namespace_view(self, namespace: _Namespace) -> dict[str, Any]:
        return {
            "id": namespace.id,
            "code": namespace.code,
            "name": namespace.name,
            "description": namespace.description,
            "idType": namespace.id_type,
            "status": "ACTIVE",
            "custom": namespace.code in self._namespaces,
            "createTime": namespace.created,
            "updateTime": namespace.created,
        }

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
        with self._lock:
            fault = self._batch_faults.pop(0) if self._batch_faults else _BatchFault()
        try:
            if fault.failure is not None:
                outcome = _Outcome(
                    "failed", metrics={}, accepted=0, failed=0, errors=[fault.failure]
                )
            else:
                outcome = self._ingest(batch, fault.rejected_rows)
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

    def _ingest(self, batch: _Batch, rejected_rows: int) -> _Outcome:
        """Validate every line of every uploaded file; publish the records only on success.

        The first ``rejected_rows`` valid rows are rejected anyway (a queued fault).

        Reads the batch's immutable fields without the lock: after COMPLETE nothing changes them.
        """
        upload_dir = self._uploads_dir / batch.id
        files = sorted(path for path in upload_dir.rglob("*") if path.is_file())
        with self._lock:  # the dataset's schema as the registry composes it now
            schema = self._registry[self._datasets[batch.dataset_id].schema_id]
            composed = record_schema(self._resolved(schema))
        records_temp, failed_temp = self._temp_path(), self._temp_path()
        records_temp.mkdir()
        try:
            tally = validate_batch(
                files,
                records_temp,
                failed_temp,
                batch_id=batch.id,
                schema=composed,
                now=datetime.now(UTC),
                rejected_rows=rejected_rows,
                parallel_min_bytes=self._parallel_min_bytes,
            )
            status, errors = _verdict(batch, len(files), tally)
            accepted, failed = tally.accepted, sum(tally.failures.values())
            if failed:
                if batch.diagnostics:
                    _split_row_errors(failed_temp, self._row_errors_dir(batch.id))
                self._diagnostics_path(batch.id).parent.mkdir(parents=True, exist_ok=True)
                os.replace(failed_temp, self._diagnostics_path(batch.id))
            if status == "success":
                records = self._records_path(batch)
                records.parent.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(records, ignore_errors=True)  # a crash came before the catalog
                os.replace(records_temp, records)
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
            shutil.rmtree(records_temp, ignore_errors=True)
            failed_temp.unlink(missing_ok=True)

    def _conclude(self, batch: _Batch, outcome: _Outcome) -> None:
        """Record the outcome; a successful replay retires its predecessors and their records."""
        now = _now_ms()
        batch.status = outcome.status
        batch.updated = batch.completed = now
        batch.metrics = outcome.metrics or None
        batch.failed_record_count = outcome.failed
        batch.errors = outcome.errors or None
        if outcome.metrics:  # Catalog's recordCount: every record processed, failed ones too
            batch.record_count = outcome.accepted + outcome.failed
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
            shutil.rmtree(self._records_path(predecessor), ignore_errors=True)

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
        """The folder of the batch's Parquet parts (``record_parts`` lists them in order)."""
        return self._state_dir / "datasets" / batch.dataset_id / batch.id

    def _diagnostics_path(self, batch_id: str) -> Path:
        return self._state_dir / "diagnostics" / f"{batch_id}.jsonl"

    def _row_errors_dir(self, batch_id: str) -> Path:
        return self._state_dir / "diagnostics" / batch_id / "row_errors"

    def _temp_path(self) -> Path:
        return self._tmp_dir / uuid.uuid4().hex

    def _load(self) -> None:
        if not self._catalog_path.exists():
            return
        catalog = orjson.loads(self._catalog_path.read_bytes())
        self._datasets = {key: _Dataset(**value) for key, value in catalog["datasets"].items()}
        self._batches = {key: _Batch(**value) for key, value in catalog["batches"].items()}
        self._registry = {
            key: _RegistryResource(**value) for key, value in catalog.get("registry", {}).items()
        }
        self._descriptors = {
            key: _Descriptor(**value) for key, value in catalog.get("descriptors", {}).items()
        }
        self._namespaces = {
            key: _Namespace(**value) for key, value in catalog.get("namespaces", {}).items()
        }
        for dataset in self._datasets.values():
            if not dataset.schema_id:  # written before datasets had schemas
                dataset.schema_id = self._built_in_schema_id()
        for batch in self._batches.values():  # one Parquet file, before records became parts
            single = self._records_path(batch).with_name(f"{batch.id}.parquet")
            if single.exists():
                self._records_path(batch).mkdir(exist_ok=True)
                os.replace(single, part_path(self._records_path(batch), 0))

    def _save(self) -> None:
        """Write the catalog to a temporary file and rename it over the old one (atomic)."""
        catalog = {
            "datasets": {key: asdict(value) for key, value in self._datasets.items()},
            "batches": {key: asdict(value) for key, value in self._batches.items()},
            "registry": {key: asdict(value) for key, value in self._registry.items()},
            "descriptors": {key: asdict(value) for key, value in self._descriptors.items()},
            "namespaces": {key: asdict(value) for key, value in self._namespaces.items()},
        }
        temp = self._temp_path()
        temp.write_bytes(orjson.dumps(catalog, option=orjson.OPT_INDENT_2))
        os.replace(temp, self._catalog_path)


def _verdict(batch: _Batch, file_count: int, tally: Tally) -> tuple[str, list[dict[str, Any]]]:
    """The batch's status and Catalog ``errors`` from its row counts and partial threshold."""
    accepted, failures = tally.accepted, tally.failures
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
            {"code": f"INGEST-{code}-400", "description": ROW_ERRORS[code], "recordCount": count}
            for code, count in sorted(
                failures.items(), key=lambda item: ROW_CODE_ORDER.index(item[0])
            )
        ),
    ]


def _split_row_errors(failed_rows: Path, folder: Path) -> None:
    """A batch's failed rows as AEP's row-error files: rows that are not JSON objects (1401)
    under parsing errors, the others under conversion errors; each row keeps its codes."""
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as files, failed_rows.open("rb") as rows:
        outputs: dict[str, BinaryIO] = {}
        for line in rows:
            code = orjson.loads(line)["_errors"][0]["code"]
            name = _ROW_ERROR_FILES[0] if code == "1401" else _ROW_ERROR_FILES[1]
            if name not in outputs:
                outputs[name] = files.enter_context((folder / name).open("wb"))
            outputs[name].write(line)


def _descriptor_entry(descriptor: dict[str, Any], form: str) -> Any:
    """One descriptor as the Accept header asks: the object, its id or its API path."""
    if form == "application/vnd.adobe.xdm-id+json":
        return descriptor["@id"]
    if form == "application/vnd.adobe.xdm-link+json":
        return f"/tenant/descriptors/{descriptor['@id']}"
    return descriptor


def _whole_number(text: str, name: str, lowest: int, highest: int | None) -> int:
    if not text.isdigit() or int(text) < lowest or (highest is not None and int(text) > highest):
        bounds = f"from {lowest} to {highest}" if highest is not None else f"of at least {lowest}"
        raise _problem(400, f"{name} must be a whole number {bounds}.")
    return int(text)


def _tag_filters(text: str | None) -> list[tuple[str, re.Pattern[str]]]:
    """Catalog's ``tags=name:value,name2:value2`` (all must match; ``*`` in a value is a
    wildcard) as (tag name, value pattern) pairs."""
    filters = []
    for condition in (text or "").split(","):
        if not condition:
            continue
        name, separator, value = condition.partition(":")
        if not separator or not name:
            raise _problem(400, f"tags condition {condition!r} must be <name>:<value>.")
        pattern = ".*".join(re.escape(part) for part in value.split("*"))
        filters.append((name, re.compile(pattern)))
    return filters


def _has_tag(tags: dict[str, Any], name: str, pattern: re.Pattern[str]) -> bool:
    values = tags.get(name)
    if not isinstance(values, list):
        values = [] if values is None else [values]
    return any(pattern.fullmatch(str(value)) for value in values)


def _name_condition(text: str) -> Callable[[str], bool]:
    """Catalog's property filter on ``name``: a leading ``!`` negates, ``,`` separates
    alternatives (any may match), ``*`` is a wildcard and ``**`` a literal asterisk."""
    negated = text.startswith("!")
    patterns = [_name_pattern(value) for value in text.removeprefix("!").split(",")]
    return lambda name: any(pattern.fullmatch(name) for pattern in patterns) != negated


def _name_pattern(name: str) -> re.Pattern[str]:
    """One ``name`` value: ``*`` is a wildcard and ``**`` a literal asterisk."""
    parts = [".*".join(re.escape(piece) for piece in part.split("*")) for part in name.split("**")]
    return re.compile(re.escape("*").join(parts))


def _select(view: dict[str, Any], properties: str | None) -> dict[str, Any]:
    """Catalog's ``properties``: only the listed top-level properties of an object."""
    if not properties:
        return view
    wanted = {name for name in properties.split(",") if name}
    return {key: value for key, value in view.items() if key in wanted}


def _media_type(accept: str | None, *, keep_version: bool = False) -> str:
    """An Accept header normalised: lower case, no spaces, without parameters unless asked."""
    value = (accept or "").replace(" ", "").lower()
    return value if keep_version else value.partition(";")[0]


def _property_condition(text: str | None) -> Callable[[dict[str, Any]], bool] | None:
    """The Schema Registry's ``property=<name>==<value>`` (or ``!=``) filter as a predicate."""
    if not text:
        return None
    for operator in ("==", "!="):
        name, separator, value = text.partition(operator)
        if separator:
            equal = operator == "=="
            return lambda view: (str(view.get(name)) == value) == equal
    raise _problem(400, "property must be <name>==<value> or <name>!=<value>.")


def _all_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    parts = body.get("allOf")
    if not isinstance(parts, list) or not all(isinstance(part, dict) for part in parts):
        raise _problem(400, 'allOf must be a list of {"$ref": ...} objects.')
    return parts


def _alt_id(resource_id: str) -> str:
    """``https://ns.adobe.com/<tenant>/schemas/<id>`` -> ``_<tenant>.schemas.<id>``."""
    tenant, noun, name = resource_id.removeprefix("https://ns.adobe.com/").split("/")
    return f"_{tenant}.{noun}.{name}"


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


def _new_batch_id() -> str:
    """A ULID, as AEP's batch ids are: 48 bits of milliseconds, 80 random, Crockford base32."""
    value = (_now_ms() << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def _now_ms() -> int:
    return int(time.time() * 1000)
