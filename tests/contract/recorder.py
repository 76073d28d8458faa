"""Every HTTP exchange of a test checked against the vendors' documents, as it happens.

``ContractRecorder`` wraps ``requests.Session.send``. A request whose path a vendored document
describes is checked against it (path, method, parameters, headers, body) when our clients sent
it; a successful answer of a local emulator is checked (status, headers, content type, body)
whoever asked, when the document has the operation. A streamed answer is checked without its
body, which the caller reads. What breaks a document is kept in ``problems``; the pytest plugin
fails the test with them. Requests a test makes by hand may break a document on purpose: only
their answers count.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from openapi_core.validation.response.exceptions import MissingData
from openapi_core.validation.response.validators import V30ResponseHeadersValidator

from tests.contract.documents import document_for

_PROJECT = Path(__file__).resolve().parents[2] / "mixpanel_assets"
_EMULATORS = _PROJECT / "sandbox"
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass
class Exchange:
    """One checked request and its answer, and what the documents say of them."""

    method: str
    path: str
    document: str
    status: int
    ours: bool
    problems: list[str] = field(default_factory=list)


class ContractRecorder:
    """Checks exchanges while installed (``install``/``uninstall``); thread-safe."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._original: Callable[..., requests.Response] | None = None

    @property
    def problems(self) -> list[str]:
        with self._lock:
            return [problem for exchange in self.exchanges for problem in exchange.problems]

    def install(self) -> None:
        original = requests.Session.send
        self._original = original
        recorder = self

        def send(session: requests.Session, request: Any, **kwargs: Any) -> requests.Response:
            ours = _sent_by_our_code()
            response = original(session, request, **kwargs)
            recorder.check(request, response, ours=ours, streamed=bool(kwargs.get("stream")))
            return response

        requests.Session.send = send  # type: ignore[method-assign]

    def uninstall(self) -> None:
        if self._original is not None:
            requests.Session.send = self._original  # type: ignore[method-assign]
            self._original = None

    def check(
        self,
        request: requests.PreparedRequest,
        response: requests.Response,
        *,
        ours: bool,
        streamed: bool = False,
    ) -> Exchange | None:
        """Check one exchange against the document of its path; None when none is vendored."""
        url = urlsplit(request.url or "")
        document = document_for(url.path)
        if document is None:
            return None
        exchange = Exchange(
            request.method or "", url.path, document.name, response.status_code, ours
        )
        what = f"{request.method} {url.path} ({document.name})"
        api = document.api
        openapi_request = RequestsOpenAPIRequest(_with_readable_body(request))
        if ours:
            try:
                api.validate_request(openapi_request)
            except PathNotFound:
                pass  # a path no vendor API has (a test's wrong URL): the server says 404
            except Exception as error:  # every validation error names itself
                exchange.problems.append(f"request {what}: {_describe(error)}")
        if url.hostname in _LOOPBACK and 200 <= response.status_code < 300:
            try:
                if streamed:
                    V30ResponseHeadersValidator(api.spec).validate(
                        openapi_request, RequestsOpenAPIResponse(response)
                    )
                else:
                    api.validate_response(openapi_request, RequestsOpenAPIResponse(response))
            except (PathNotFound, OperationNotFound):
                pass  # nothing to check it against; a request of ours was reported above
            except MissingData:
                if response.content or not _text(response):  # text/plain "" is a string
                    exchange.problems.append(f"answer {response.status_code} to {what}: no body")
            except Exception as error:
                exchange.problems.append(
                    f"answer {response.status_code} to {what}: {_describe(error)}"
                )
        with self._lock:
            self.exchanges.append(exchange)
        return exchange


def _text(response: requests.Response) -> bool:
    return response.headers.get("Content-Type", "").startswith("text/plain")


def _with_readable_body(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """The request as sent, a streamed body (an uploaded file) standing in as a few bytes: the
    documents describe uploads as any binary content."""
    if request.body is None or isinstance(request.body, bytes | str):
        return request
    copy = request.copy()
    copy.body = b"(streamed file)"
    return copy


def _sent_by_our_code() -> bool:
    """True when the request comes from the project's own code (its clients), not a test's
    hand-made request nor an emulator."""
    frame = sys._getframe(2)
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if path.is_relative_to(_PROJECT):
            return not path.is_relative_to(_EMULATORS)
        if "tests" in path.parts and "contract" not in path.parts:
            return False
        frame = frame.f_back
    return False


def _describe(error: BaseException) -> str:
    """The error, and where the schema errors beneath it are, in a line."""
    details = []
    current: BaseException | None = error
    while current is not None:
        details += [_schema_error(item) for item in getattr(current, "schema_errors", ()) or ()]
        current = current.__cause__
    if details:
        return f"{type(error).__name__}: " + "; ".join(dict.fromkeys(details))
    return f"{type(error).__name__}: {str(error)[:300]}"


def _schema_error(error: Any) -> str:
    location = "/".join(map(str, getattr(error, "absolute_path", []) or []))
    return f"{location or '(body)'}: {str(getattr(error, 'message', error))[:200]}"
