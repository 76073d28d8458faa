"""One authenticated AEP call: the IMS token, the four headers, retries and errors.

Policy (``docs/aep-api.md``, "Client transport", says why): a 401 renews the token once; a POST
that creates something is retried only on answers that prove nothing was created.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
import tenacity

from mixpanel_assets.aep.errors import AEPError, AEPRefusal
from mixpanel_assets.http_retry import MAX_RETRY_AFTER_SECONDS, RetryPolicy

DEFAULT_SCOPES = "openid,AdobeID,read_organizations,additional_info.projectedProductContext,session"
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_NOTHING_CREATED = frozenset({429, 503})  # answers that prove a POST created nothing


def _send_with_retries(
    send: Callable[[], requests.Response],
    *,
    what: str,
    policy: RetryPolicy,
    retry_statuses: frozenset[int] = _RETRY_STATUSES,
    retry_broken_connections: bool = True,
) -> requests.Response:
    """``send()`` again while it answers a retryable status; returns the first other answer."""
    retry = tenacity.retry_if_result(lambda response: response.status_code in retry_statuses)
    if retry_broken_connections:
        retry = retry | tenacity.retry_if_exception_type(requests.RequestException)
    try:
        return policy.retrying(retry)(send)
    except requests.RequestException as error:
        raise AEPError(
            f"could not {what}: {type(error).__name__}: {error}. AEP may or may not have done it."
        ) from None
    except tenacity.RetryError as exhausted:
        last = exhausted.last_attempt
        if last.failed:
            error = last.exception()
            problem = f"{type(error).__name__}: {error}"
        else:
            response = last.result()
            problem = f"HTTP {response.status_code}: {_excerpt(response)}"
        raise AEPError(
            f"could not {what} after {policy.max_attempts} attempts ({problem})."
        ) from None


class IMSToken:
    """An IMS access token for OAuth server-to-server credentials, renewed before it expires."""

    def __init__(
        self,
        *,
        ims_url: str,
        client_id: str,
        client_secret: str,
        scopes: str,
        session: requests.Session,
        timeout: tuple[float, float],
        retry: RetryPolicy,
        renew_before_seconds: float = 300.0,
    ) -> None:
        self._url = ims_url.rstrip("/") + "/ims/token/v3"
        self._form = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
            "scope": scopes,
        }
        self._session = session
        self._timeout = timeout
        self._retry = retry
        self._renew_before_seconds = renew_before_seconds
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()

    def get(self) -> str:
        """The current token, fetched when there is none or it is about to expire."""
        with self._lock:
            if self._token is None or time.monotonic() >= self._expires_at:
                self._fetch()
            assert self._token is not None
            return self._token

    def invalidate(self) -> None:
        """Forget the token: the next ``get`` fetches a new one."""
        with self._lock:
            self._token = None

    def _fetch(self) -> None:
        # Credentials go in the form body: query strings end up in logs. Asking for a token has
        # no side effect, so every transient failure may be retried.
        response = _send_with_retries(
            lambda: self._session.post(self._url, data=self._form, timeout=self._timeout),
            what=f"get an access token from Adobe IMS at {self._url}",
            policy=self._retry,
        )
        if response.status_code != 200:
            raise AEPError(
                f"Adobe IMS refused the token request (HTTP {response.status_code}: "
                f"{_excerpt(response)}): check AEP_CLIENT_ID, AEP_CLIENT_SECRET and AEP_SCOPES "
                "against the OAuth server-to-server credential in the Adobe Developer Console."
            )
        body = response.json()
        lifetime = float(body.get("expires_in", 0))
        self._token = body["access_token"]
        if lifetime > self._renew_before_seconds:
            self._expires_at = time.monotonic() + lifetime - self._renew_before_seconds
        else:
            # A very short-lived token: use it for half its life rather than not at all.
            self._expires_at = time.monotonic() + lifetime / 2


class PlatformTransport:
    """Sends AEP platform calls with a fresh token, the required headers, a timeout and retries."""

    def __init__(
        self,
        *,
        ims_url: str,
        platform_url: str,
        client_id: str,
        client_secret: str,
        org_id: str,
        sandbox_name: str,
        scopes: str = DEFAULT_SCOPES,
        connect_timeout_seconds: float = 10.0,
        read_timeout_seconds: float = 300.0,
        max_attempts: int = 5,
        retry_base_seconds: float = 1.0,
        max_retry_after_seconds: float = MAX_RETRY_AFTER_SECONDS,
        session: requests.Session | None = None,
    ) -> None:
        self._session = session or requests.Session()
        if self._session.verify is False:
            raise ValueError(
                "TLS certificate verification cannot be turned off for AEP: the token and the "
                "data travel over it. Point REQUESTS_CA_BUNDLE at your proxy's CA instead."
            )
        self._timeout = (connect_timeout_seconds, read_timeout_seconds)
        self._platform_url = platform_url.rstrip("/")
        self._client_id = client_id
        self._org_id = org_id
        self._sandbox_name = sandbox_name
        self._retry = RetryPolicy(
            max_attempts=max_attempts,
            base_seconds=retry_base_seconds,
            max_retry_after_seconds=max_retry_after_seconds,
        )
        self._token = IMSToken(
            ims_url=ims_url,
            client_id=client_id,
            client_secret=client_secret,
            scopes=scopes,
            session=self._session,
            timeout=self._timeout,
            retry=self._retry,
        )

    def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body_path: Path | None = None,
        creates: bool = False,
        stream: bool = False,
    ) -> requests.Response:
        """One platform call; a 401 renews the token once; any other 4xx raises AEPRefusal."""
        url = self._platform_url + path

        def send() -> requests.Response:
            request_headers = {**self._headers(), **(headers or {})}
            if body_path is not None:
                with body_path.open("rb") as body:
                    return self._session.request(
                        method, url, data=body, headers=request_headers, timeout=self._timeout
                    )
            return self._session.request(
                method,
                url,
                json=json,
                params=params,
                headers=request_headers,
                timeout=self._timeout,
                stream=stream,
            )

        def attempt() -> requests.Response:
            return _send_with_retries(
                send,
                what=what,
                policy=self._retry,
                retry_statuses=_NOTHING_CREATED if creates else _RETRY_STATUSES,
                retry_broken_connections=not creates,
            )

        response = attempt()
        if response.status_code == 401:
            self._token.invalidate()
            response = attempt()
        if response.status_code < 400:
            return response
        problem = f"HTTP {response.status_code}: {_excerpt(response)}"
        if response.status_code < 500:
            raise AEPRefusal(
                f"AEP refused to {what} ({problem}).{_advice(response)}", response.status_code
            )
        raise AEPError(f"AEP failed to {what} ({problem}); it may or may not have done it.")

    def _headers(self) -> dict[str, str]:
        """The four headers every platform call carries."""
        return {
            "Authorization": f"Bearer {self._token.get()}",
            "x-api-key": self._client_id,
            "x-gw-ims-org-id": self._org_id,
            "x-sandbox-name": self._sandbox_name,
        }


def segment(value: str) -> str:
    """An id as one path segment: ``/``, ``?``, ``#`` and ``%`` cannot change the URL's meaning."""
    return quote(value, safe="")


def _advice(response: requests.Response) -> str:
    if response.status_code == 401:
        return " The access token was refused twice: check AEP_CLIENT_ID and AEP_SCOPES."
    if response.status_code == 403:
        return (
            " Check AEP_ORG_ID and AEP_SANDBOX_NAME, and that the credential's product profile "
            "may write to this AEP sandbox and dataset."
        )
    if response.status_code == 404:
        return " Check AEP_PLATFORM_URL and AEP_DATASET_ID."
    return ""


def _excerpt(response: requests.Response) -> str:
    return response.text[:500].strip() or response.reason
