"""The local platform's HTTP plumbing: bodies, answers, AEP's error shapes, the server.

The local platform's HTTP plumbing: request bodies, answers, AEP's error shapes and the
threaded server, with nothing of any one API.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import parse_qs, urlsplit

import orjson

from mixpanel_assets.sandbox.platform_state import Fault

logger = logging.getLogger(__name__)

MAX_FORM_BYTES = 1024 * 1024  # JSON and form bodies of the non-upload calls
_DRAIN_LIMIT = 64 * 1024 * 1024  # unread body left over: discard up to this, else close
_CHUNK_BYTES = 1024 * 1024
_LINE_LIMIT = 65536


@dataclass
class Response:
    """An HTTP answer: status, headers and a body in memory or a file streamed from disk."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    file: Path | None = None  # streamed from disk instead of ``body``


class ApiError(Exception):
    """Raised anywhere while handling a request to answer it with ``response``."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def json_answer(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer of ``payload`` with ``status``."""
    return Response(status, orjson.dumps(payload), headers=headers or {})


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> ApiError:
    """An error in the shape of AEP's platform APIs: ``{"type", "title", "status", "detail"}``."""
    payload = {
        "type": f"https://ns.adobe.com/aep/errors/LOCAL-{status}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    return ApiError(json_answer(status, payload, headers))


def fault_error(fault: Fault) -> ApiError:
    """The error a queued fault answers with, with its Retry-After if it has one."""
    headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
    return problem(fault.status, "Fault queued on the local platform.", headers)


def gateway_error(status: int, code: str, message: str) -> ApiError:
    """An error in the shape of Adobe's API gateway (token and API key checks)."""
    return ApiError(json_answer(status, {"error_code": code, "message": message}))


def ims_error(status: int, error: str, description: str) -> ApiError:
    """An error in the shape of IMS's OAuth token endpoint."""
    return ApiError(json_answer(status, {"error": error, "error_description": description}))


class Body:
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
        """The whole body, for small ones; over ``limit`` bytes answers 413."""
        data = bytearray()
        for chunk in self.chunks():
            data += chunk
            if len(data) > limit:
                raise problem(413, f"The request body is larger than {limit} bytes.")
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
        except (ApiError, OSError):
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
                raise problem(400, "The request body ended before its announced length.")
            size -= len(chunk)
            yield chunk

    def _dechunk(self) -> Iterator[bytes]:
        while True:
            line = self._rfile.readline(_LINE_LIMIT)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise problem(400, "The chunked request body is malformed.") from None
            if size == 0:
                break
            yield from self._exactly(size)
            self._rfile.readline(_LINE_LIMIT)
        while self._rfile.readline(_LINE_LIMIT).strip():  # trailer fields, up to the blank line
            pass


@dataclass
class Request:
    """An HTTP request as the emulator sees it: method, path, query, headers and body stream."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: Body

    def param(self, name: str) -> str | None:
        """The query parameter's last value, None when absent."""
        values = self.query.get(name)
        return values[-1] if values else None


Route = Callable[[Request, re.Match[str]], Response]


class Server(ThreadingHTTPServer):
    """The HTTP server; tracks open connections so ``stop`` can close idle keep-alive ones."""

    def __init__(self, address: tuple[str, int], answer: Callable[[Request], Response]) -> None:
        self.answer = answer
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, Handler)

    def close_connections(self) -> None:
        """Shut down every open connection, idle keep-alive ones too."""
        with self.connections_lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):  # already closed by the client
                    connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)


class Handler(BaseHTTPRequestHandler):
    """HTTP plumbing only: body framing, replies and keep-alive; the emulator answers."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms stalls
    timeout = 120  # seconds an idle keep-alive connection or a stalled upload may wait

    def setup(self) -> None:
        super().setup()
        server = cast(Server, self.server)
        with server.connections_lock:
            server.connections.add(self.connection)

    def finish(self) -> None:
        server = cast(Server, self.server)
        with server.connections_lock:
            server.connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _dispatch(self) -> None:
        target = urlsplit(self.path)
        try:
            body = Body(self.rfile, self.headers)
        except ValueError:
            self.close_connection = True
            self._reply(problem(400, "Content-Length is not a valid length.").response)
            return
        path = target.path.rstrip("/") or "/"
        request = Request(
            self.command, path, parse_qs(target.query, keep_blank_values=True), self.headers, body
        )
        response = cast(Server, self.server).answer(request)
        if not body.drain():
            self.close_connection = True
        self._reply(response)

    def _reply(self, response: Response) -> None:
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


def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object body; a wrong content type or body answers 415 or 400."""
    if request.headers.get_content_type() != "application/json":
        raise problem(415, "Send the body as Content-Type application/json.")
    try:
        body = orjson.loads(request.body.read_all(MAX_FORM_BYTES))
    except orjson.JSONDecodeError:
        raise problem(400, "The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise problem(400, "The body must be a JSON object.")
    return body


def whole_number(text: str, name: str, lowest: int, highest: int | None) -> int:
    """``text`` as a whole number within the bounds; else raises a 400 answer naming ``name``."""
    if not text.isdigit() or int(text) < lowest or (highest is not None and int(text) > highest):
        bounds = f"from {lowest} to {highest}" if highest is not None else f"of at least {lowest}"
        raise problem(400, f"{name} must be a whole number {bounds}.")
    return int(text)


def select_properties(view: dict[str, Any], properties: str | None) -> dict[str, Any]:
    """Catalog's ``properties``: only the listed top-level properties of an object."""
    if not properties:
        return view
    wanted = {name for name in properties.split(",") if name}
    return {key: value for key, value in view.items() if key in wanted}


def media_type(accept: str | None, *, keep_version: bool = False) -> str:
    """An Accept header normalised: lower case, no spaces, without parameters unless asked."""
    value = (accept or "").replace(" ", "").lower()
    return value if keep_version else value.partition(";")[0]
