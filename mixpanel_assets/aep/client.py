"""Client of Adobe Experience Platform: IMS OAuth server-to-server, Batch Ingestion, Catalog.

Knows nothing of Dagster. Every call carries the four headers AEP requires; the access token is
cached until shortly before it expires and fetched again once if AEP answers 401. 429 and 5xx
answers are retried with exponential backoff and jitter (only where a retry cannot duplicate
work). Secrets never appear in errors: messages quote AEP's answer, never our request.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

DEFAULT_SCOPES = "openid,AdobeID,read_organizations,additional_info.projectedProductContext,session"
SUCCEEDED = frozenset({"success", "active"})
FAILED = frozenset({"failed", "failure", "aborted", "abandoned"})
REPLACED = frozenset({"inactive", "deleted"})
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class AEPError(RuntimeError):
    """AEP refused or failed a request; the message says which call, why, and what to do."""


class BatchTimeoutError(AEPError):
    """A batch did not reach a terminal status in time."""


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
        self._renew_before_seconds = renew_before_seconds
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()

    def get(self) -> str:
        with self._lock:
            if self._token is None or time.monotonic() >= self._expires_at:
                self._fetch()
            assert self._token is not None
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def _fetch(self) -> None:
        try:
            # Credentials go in the form body: query strings end up in logs.
            response = self._session.post(self._url, data=self._form, timeout=self._timeout)
        except requests.RequestException as problem:
            raise AEPError(f"Adobe IMS at {self._url} could not be reached: {problem}") from None
        if response.status_code != 200:
            raise AEPError(
                f"Adobe IMS refused the token request (HTTP {response.status_code}: "
                f"{_excerpt(response)}): check AEP_CLIENT_ID, AEP_CLIENT_SECRET and AEP_SCOPES "
                "against the OAuth server-to-server credential in the Adobe Developer Console."
            )
        body = response.json()
        lifetime = float(body.get("expires_in", 0))
        self._token = body["access_token"]
        self._expires_at = time.monotonic() + max(0.0, lifetime - self._renew_before_seconds)
        if lifetime <= self._renew_before_seconds:
            # A very short-lived token: use it for half its life rather than not at all.
            self._expires_at = time.monotonic() + lifetime / 2


class AEPClient:
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
        session: requests.Session | None = None,
    ) -> None:
        self._session = session or requests.Session()
        self._timeout = (connect_timeout_seconds, read_timeout_seconds)
        self._platform_url = platform_url.rstrip("/")
        self._client_id = client_id
        self._org_id = org_id
        self._sandbox_name = sandbox_name
        self._max_attempts = max_attempts
        self._retry_base_seconds = retry_base_seconds
        self._token = IMSToken(
            ims_url=ims_url,
            client_id=client_id,
            client_secret=client_secret,
            scopes=scopes,
            session=self._session,
            timeout=self._timeout,
        )

    # Batch Ingestion API -------------------------------------------------------------------

    def create_batch(
        self,
        *,
        dataset_id: str,
        external_id: str,
        predecessors: list[str],
        tags: Mapping[str, list[str]],
        partial_ingestion_percent: float,
    ) -> str:
        body: dict[str, Any] = {
            "datasetId": dataset_id,
            "inputFormat": {"format": "json", "isMultiLineJson": False},
            "externalId": external_id,
            "tags": dict(tags),
            "enableErrorDiagnostics": True,
        }
        if partial_ingestion_percent > 0:
            body["partialIngestionPercent"] = partial_ingestion_percent
        if predecessors:
            body["replay"] = {
                "predecessors": [f"${batch_id}" for batch_id in predecessors],
                "reason": "replace",
            }
        # POST creates: retry only answers that prove nothing was created (429, 503).
        response = self._call(
            "POST",
            "/data/foundation/import/batches",
            json=body,
            retry_statuses=frozenset({429, 503}),
            what=f"create a batch in dataset {dataset_id}",
        )
        return response.json()["id"]

    def upload_file(self, batch_id: str, dataset_id: str, name: str, path: Path) -> None:
        """PUT one file into the batch; idempotent, so every failure may be retried."""
        url = f"/data/foundation/import/batches/{batch_id}/datasets/{dataset_id}/files/{name}"
        self._call(
            "PUT",
            url,
            body_path=path,
            headers={"Content-Type": "application/octet-stream"},
            what=f"upload {name} into batch {batch_id}",
        )

    def complete_batch(self, batch_id: str) -> None:
        """Signal the upload is done; AEP documents retrying COMPLETE as safe."""
        self._call(
            "POST",
            f"/data/foundation/import/batches/{batch_id}",
            params={"action": "COMPLETE"},
            what=f"complete batch {batch_id}",
        )

    def abort_batch(self, batch_id: str) -> None:
        self._call(
            "POST",
            f"/data/foundation/import/batches/{batch_id}",
            params={"action": "ABORT"},
            what=f"abort batch {batch_id}",
        )

    # Catalog -------------------------------------------------------------------------------

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        response = self._call(
            "GET", f"/data/foundation/catalog/batches/{batch_id}", what=f"read batch {batch_id}"
        )
        body = response.json()
        return {"id": batch_id, **body.get(batch_id, next(iter(body.values()), {}))}

    def wait_for_batch(
        self, batch_id: str, *, timeout_seconds: float, poll_seconds: float
    ) -> dict[str, Any]:
        """Poll the Catalog, backing off, until the batch reaches a terminal status."""
        deadline = time.monotonic() + timeout_seconds
        interval = poll_seconds
        while True:
            batch = self.get_batch(batch_id)
            if batch.get("status") in SUCCEEDED | FAILED | REPLACED:
                return batch
            if time.monotonic() + interval > deadline:
                raise BatchTimeoutError(
                    f"batch {batch_id} was still {batch.get('status')!r} after "
                    f"{timeout_seconds:.0f} s; AEP may be slow: check it in the AEP UI "
                    "(Datasets > batch) and re-run the day once it has finished or failed."
                )
            time.sleep(interval)
            interval = min(interval * 2, 30.0)

    # Transport -----------------------------------------------------------------------------

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
        retry_statuses: frozenset[int] = _RETRY_STATUSES,
    ) -> requests.Response:
        url = self._platform_url + path
        refreshed_token = False
        problem = ""
        for attempt in range(1, self._max_attempts + 1):
            request_headers = {**self._headers(), **(headers or {})}
            try:
                if body_path is not None:
                    with body_path.open("rb") as body:
                        response = self._session.request(
                            method, url, data=body, headers=request_headers, timeout=self._timeout
                        )
                else:
                    response = self._session.request(
                        method,
                        url,
                        json=json,
                        params=params,
                        headers=request_headers,
                        timeout=self._timeout,
                    )
            except requests.RequestException as error:
                if method == "POST" and json is not None:
                    raise AEPError(f"could not {what}: {error}") from None
                problem = f"{type(error).__name__}: {error}"
                retry_after = None
            else:
                if response.status_code < 400:
                    return response
                if response.status_code == 401 and not refreshed_token:
                    self._token.invalidate()
                    refreshed_token = True
                    continue
                problem = f"HTTP {response.status_code}: {_excerpt(response)}"
                if response.status_code not in retry_statuses:
                    raise AEPError(f"AEP refused to {what} ({problem}).{_advice(response)}")
                retry_after = _retry_after(response)
            if attempt < self._max_attempts:
                time.sleep(self._backoff(attempt, retry_after))
        raise AEPError(f"could not {what} after {self._max_attempts} attempts ({problem}).")

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._token.get()}",
            "x-api-key": self._client_id,
            "x-gw-ims-org-id": self._org_id,
            "x-sandbox-name": self._sandbox_name,
        }

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        exponential = min(60.0, self._retry_base_seconds * 2 ** (attempt - 1))
        return max(exponential * random.uniform(0.5, 1.0), retry_after or 0.0)


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


def _retry_after(response: requests.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["Retry-After"]))
    except (KeyError, ValueError):
        return None
