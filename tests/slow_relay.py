"""A slow link on 127.0.0.1: passes each GET to an upstream server and trickles its answer back.

Tests point a client at it to see what a long transfer looks like (the emulators stay as the
vendors document them; only the network in between is slow).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

import requests

_PASSED_REQUEST_HEADERS = ("Authorization", "Accept", "Accept-Encoding")
_HOP_HEADERS = {"connection", "content-length", "transfer-encoding", "keep-alive"}


class SlowRelay:
    """Relays ``upstream`` (a base URL), sending each answer's body in ``piece_bytes`` pieces
    ``pause_seconds`` apart, as received (still compressed when it was)."""

    def __init__(self, upstream: str, *, piece_bytes: int = 1024, pause_seconds: float = 0.1):
        parts = urlsplit(upstream)
        self._upstream = f"{parts.scheme}://{parts.netloc}"
        self._path = parts.path
        self.piece_bytes = piece_bytes
        self.pause_seconds = pause_seconds
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The upstream URL's path, reached through the relay."""
        return f"http://127.0.0.1:{self._server.server_address[1]}{self._path}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                headers = {
                    name: self.headers[name]
                    for name in _PASSED_REQUEST_HEADERS
                    if name in self.headers
                }
                with requests.get(
                    relay._upstream + self.path, headers=headers, stream=True, timeout=30
                ) as answer:
                    self.send_response(answer.status_code)
                    for name, value in answer.headers.items():
                        if name.lower() not in _HOP_HEADERS:
                            self.send_header(name, value)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for piece in answer.raw.stream(relay.piece_bytes, decode_content=False):
                        time.sleep(relay.pause_seconds)
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
