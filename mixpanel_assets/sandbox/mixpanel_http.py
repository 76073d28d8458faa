"""The Mixpanel emulator's HTTP side: error answers, chunked and gzipped bodies, resets.

Bodies are cut in fixed-size chunks that ignore line boundaries and gzipped on the fly, as
Mixpanel's are; the faults a test queues shape them (an early end, a reset, corrupt gzip).
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from isal import isal_zlib

TERMINATED_EARLY = b"terminated early"
GZIP_MIN_BYTES = 1400  # Mixpanel gzips only responses over 1400 bytes
_COMPRESS_BLOCK_BYTES = 64 * 1024
# A byte-aligned deflate block header with BTYPE=11 (reserved): any inflater fails on it.
_INVALID_DEFLATE = b"\xff\xff\xff\xff"


class ApiError(Exception):
    """An error answer: Mixpanel's JSON body ``{"request": ..., "error": ...}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class ConnectionReset(Exception):
    """Raised mid-body by the ``reset`` fault: the connection must be torn down abruptly."""


class Exchange:
    """Writes one response and logs it just before its last byte goes out.

    Logging before the end of the response (not after) means a client that has read a whole
    response always finds it in the request log.
    """

    def __init__(self, handler: Handler, record: Callable[[int, int], None]) -> None:
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
        """Send the status line and ``headers``."""
        self.status = status
        self.handler.send_response(status)
        for name, value in headers.items():
            self.handler.send_header(name, value)
        self.handler.end_headers()

    def send_whole(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        """Send a response with a ``Content-Length`` body."""
        self.send_head(status, {**headers, "Content-Length": str(len(body))})
        self.body_bytes = len(body)
        self.log()
        self.handler.wfile.write(body)

    def send_error(self, error: ApiError) -> None:
        """Send ``error`` as Mixpanel's JSON error body."""
        body = orjson.dumps({"request": self.handler.path, "error": error.message})
        self.send_whole(error.status, body, {"Content-Type": "application/json", **error.headers})

    def send_chunk(self, chunk: bytes) -> None:
        """Send one chunk of a chunked body."""
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


class ChunkedBody:
    """A chunked body cut in fixed-size chunks that ignore line boundaries, as Mixpanel's are."""

    def __init__(self, exchange: Exchange, chunk_size: int, reset_after: int | None) -> None:
        self._exchange = exchange
        self._chunk_size = chunk_size
        self._reset_after = reset_after
        self._buffer = bytearray()

    def write(self, data: bytes) -> None:
        """Buffer ``data`` and send every whole chunk."""
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
            raise ConnectionReset
        self._exchange.handler.wfile.write(b"0\r\n\r\n")

    def _send(self, chunk: bytes) -> None:
        if self._reset_after is not None:
            room = self._reset_after - self._exchange.body_bytes
            if len(chunk) >= room:
                if room > 0:
                    self._exchange.send_chunk(chunk[:room])
                raise ConnectionReset
        self._exchange.send_chunk(chunk)


def stream_lines(
    exchange: Exchange,
    lines: Iterator[bytes],
    *,
    accept_encoding: str,
    chunk_size: int,
    terminate_after_lines: int | None = None,
    reset_after_bytes: int | None = None,
    corrupt_gzip_after_bytes: int | None = None,
) -> None:
    """Send a 200 chunked body, gzipped on the fly when asked and worth it; never whole.

    ``terminate_after_lines`` ends the body with a ``terminated early`` line after that many;
    ``reset_after_bytes`` resets the connection after that many body bytes;
    ``corrupt_gzip_after_bytes`` gzips (even if not asked) and turns invalid after that many.
    """
    if terminate_after_lines is not None:
        lines = itertools.chain(itertools.islice(lines, terminate_after_lines), [TERMINATED_EARLY])
    head = bytearray()
    for line in lines:  # peek just enough to know whether the body exceeds 1400 bytes
        head += line + b"\n"
        if len(head) > GZIP_MIN_BYTES:
            break
    corrupt_after = corrupt_gzip_after_bytes
    wants_gzip = _accepts_gzip(accept_encoding)
    gzip = corrupt_after is not None or (wants_gzip and len(head) > GZIP_MIN_BYTES)
    headers = {"Content-Type": "text/plain; charset=utf-8", "Transfer-Encoding": "chunked"}
    if gzip:
        headers["Content-Encoding"] = "gzip"
    exchange.send_head(200, headers)
    body = ChunkedBody(exchange, chunk_size, reset_after_bytes)
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


class Server(ThreadingHTTPServer):
    """Tracks open connections so that ``stop`` also ends kept-alive ones."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], serve: Callable[[Handler], None]) -> None:
        super().__init__(address, Handler)
        self.serve = serve
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection, tracked while it is open."""
        with self._connections_lock:
            self._connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    def close_connections(self) -> None:
        """Shut down every open connection."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by its handler
                connection.shutdown(socket.SHUT_RDWR)


class Handler(BaseHTTPRequestHandler):
    """Hands every request to the server's ``serve``."""

    protocol_version = "HTTP/1.1"
    timeout = 60  # idle kept-alive connections do not hold a thread forever
    server: Server

    def do_GET(self) -> None:
        """Serve a GET."""
        self.server.serve(self)

    def _reject(self) -> None:
        """Other methods get the JSON 404; any request body is left unread, so close after."""
        self.close_connection = True
        self.server.serve(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = _reject

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: ``MixpanelEmulator.request_log`` records every request."""


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


def _accepts_gzip(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False
