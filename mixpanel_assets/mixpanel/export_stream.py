"""The streamed body of an export: decompressed as it comes, split into lines, summarised.

Lines are split on ``b"\\n"`` only (never ``splitlines``, which also breaks on U+2028 inside JSON
strings). A ``terminated early`` trailer, a truncated last line or a broken gzip stream raise
``IncompleteExportError``: the export is incomplete and worth another attempt.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable
from typing import BinaryIO

import orjson
import requests
from isal import isal_zlib

_TRUNCATION_MARKERS = (b"terminated early", b"export terminated early")
_READ_SIZE = 256 * 1024


class IncompleteExportError(RuntimeError):
    """The response ended before the export was complete; retrying the request may succeed."""


class LineScanner:
    """Splits a decompressed byte stream into lines on ``b"\\n"`` and summarises them."""

    def __init__(self, on_line: Callable[[bytes], None]) -> None:
        self._pending = b""
        self._digest = hashlib.sha256()
        self._on_line = on_line
        self.byte_count = 0
        self.line_count = 0

    def feed(self, data: bytes) -> None:
        """Take the next decompressed bytes and pass on every line they complete."""
        if not data:
            return
        self._digest.update(data)
        self.byte_count += len(data)
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            self._emit(line)

    def finish(self) -> str:
        """Flush the last line; raise if the stream was cut inside a record."""
        if self._pending:
            try:
                orjson.loads(self._pending)
            except orjson.JSONDecodeError:
                raise IncompleteExportError(
                    f"the export ended inside a record ({self._pending[:80]!r}...)"
                ) from None
            self._emit(self._pending)
            self._pending = b""
        return self._digest.hexdigest()

    def _emit(self, line: bytes) -> None:
        if line.strip() in _TRUNCATION_MARKERS:
            raise IncompleteExportError("Mixpanel ended the export with 'terminated early'")
        if line:
            self.line_count += 1
            self._on_line(line)


class _GzipStreamReader:
    """Decompresses gzip members one after another, noticing a stream cut short.

    It goes through ISA-L, about twice zlib's speed.
    """

    def __init__(self) -> None:
        self._decompressor = isal_zlib.decompressobj(wbits=31)

    def feed(self, data: bytes) -> bytes:
        """The decompressed bytes of the next compressed ones, across gzip members."""
        out = []
        while data:
            out.append(self._decompressor.decompress(data))
            data = self._decompressor.unused_data
            if data:
                self._decompressor = isal_zlib.decompressobj(wbits=31)
        return b"".join(out)

    def finish(self) -> bytes:
        """The last decompressed bytes; raises if the stream ended before its end marker."""
        tail = self._decompressor.flush()
        if not self._decompressor.eof:
            raise IncompleteExportError("the gzip stream ended before its end marker")
        return tail


def _is_gzip(response: requests.Response) -> bool:
    return response.headers.get("Content-Encoding", "").lower() == "gzip"


def consume(response: requests.Response, scanner: LineScanner, file: BinaryIO | None) -> None:
    """Feed the decompressed body to ``scanner``; keep it gzip-compressed in ``file`` if given."""
    gzip_body = _is_gzip(response)
    reader = _GzipStreamReader() if gzip_body else None
    sink: BinaryIO | None = file
    if file is not None and not gzip_body:
        sink = gzip.GzipFile(fileobj=file, mode="wb", compresslevel=1, mtime=0)
    try:
        for chunk in response.raw.stream(_READ_SIZE, decode_content=False):
            if sink is not None:
                sink.write(chunk)
            scanner.feed(reader.feed(chunk) if reader else chunk)
        if reader:
            scanner.feed(reader.finish())
    finally:
        if sink is not file and sink is not None:
            sink.close()
