"""The local platform's Adobe IMS, the checks every call passes, and identity namespaces.

IMS gives client-credentials tokens; every platform call must carry a token, the API key, the
org and the AEP sandbox.
"""

from __future__ import annotations

import re
import secrets
import time
from email.message import Message
from typing import Any
from urllib.parse import parse_qs

from mixpanel_assets.sandbox.platform_http import (
    MAX_FORM_BYTES,
    Request,
    Response,
    gateway_error,
    ims_error,
    json_answer,
    json_body,
    problem,
)
from mixpanel_assets.sandbox.platform_state import (
    Namespace,
    now_ms,
)

_ID_TYPES = frozenset(
    {"COOKIE", "CROSS_DEVICE", "DEVICE", "EMAIL", "MOBILE", "NON_PEOPLE", "PHONE"}
)
# Identity namespaces every organisation has (code, id, name, idType).
_STANDARD_NAMESPACES = (
    ("ECID", 4, "Experience Cloud ID", "COOKIE"),
    ("Email", 6, "Email", "EMAIL"),
    ("Phone", 7, "Phone", "PHONE"),
)


class IdentityAPI:
    """IMS tokens, the platform calls' credentials and Identity Service namespaces.

    Mixed into ``PlatformEmulator``, whose state, lock and storage it uses.
    """

    def _authorize(self, headers: Message) -> None:
        """What every platform call must carry: a live token, the API key, org and sandbox."""
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        with self._lock:
            expires = self._tokens.get(token.strip())
        if scheme.lower() != "bearer" or expires is None or expires <= time.monotonic():
            raise gateway_error(401, "401013", "Oauth token is not valid")
        api_key = headers.get("x-api-key")
        if not api_key:
            raise gateway_error(403, "403000", "Api Key is required (header x-api-key)")
        if api_key != self._client_id:
            raise gateway_error(403, "403003", "Api Key is invalid (header x-api-key)")
        if headers.get("x-gw-ims-org-id") != self._org_id:
            raise problem(
                403, "Header x-gw-ims-org-id is missing or is not the organisation of this client."
            )
        sandbox = headers.get("x-sandbox-name")
        if not sandbox:
            raise problem(400, "Header x-sandbox-name is required.")
        if sandbox != self._sandbox_name:
            raise problem(
                403, f"Header x-sandbox-name: the organisation has no sandbox {sandbox!r}."
            )

    # IMS -------------------------------------------------------------------------------------

    def _issue_token(self, request: Request, match: re.Match[str]) -> Response:
        if "client_id" in request.query or "client_secret" in request.query:
            raise ims_error(
                400,
                "invalid_request",
                "Send client_id and client_secret in the form body, not the query string.",
            )
        if request.headers.get_content_type() != "application/x-www-form-urlencoded":
            raise ims_error(
                400, "invalid_request", "The body must be application/x-www-form-urlencoded."
            )
        body = request.body.read_all(MAX_FORM_BYTES).decode("utf-8", "replace")
        form = {key: values[-1] for key, values in parse_qs(body).items()}
        if form.get("grant_type") != "client_credentials":
            raise ims_error(
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
            raise ims_error(401, "invalid_client", "invalid client_id or client_secret")
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._tokens = {key: expiry for key, expiry in self._tokens.items() if expiry > now}
            self._tokens[token] = now + self._token_lifetime
        return json_answer(
            200,
            {"access_token": token, "token_type": "bearer", "expires_in": self._token_lifetime},
        )

    # Identity Service ------------------------------------------------------------------------

    def _list_namespaces(self, request: Request, match: re.Match[str]) -> Response:
        with self._lock:
            return json_answer(200, [self._namespace_view(item) for item in self._all_namespaces()])

    def _create_namespace(self, request: Request, match: re.Match[str]) -> Response:
        body = json_body(request)
        code, name = body.get("code"), body.get("name")
        if not isinstance(code, str) or not re.fullmatch(r"[A-Za-z0-9_]+", code):
            raise problem(400, "code is required: letters, digits and underscores.")
        if not isinstance(name, str) or not name.strip():
            raise problem(400, "name is required: a non-empty string.")
        id_type = str(body.get("idType", "")).upper()
        if id_type not in _ID_TYPES:
            raise problem(400, f"idType must be one of {', '.join(sorted(_ID_TYPES))}.")
        with self._lock:
            if any(known.code.lower() == code.lower() for known in self._all_namespaces()):
                raise problem(409, f"An identity namespace with code {code!r} exists.")
            namespace = Namespace(
                id=10_000_000 + len(self._namespaces),
                code=code,
                name=name,
                description=str(body.get("description", "")),
                id_type=id_type,
                created=now_ms(),
            )
            self._namespaces[code] = namespace
            self._save()
            return json_answer(200, self._namespace_view(namespace))

    def _all_namespaces(self) -> list[Namespace]:
        standard = [
            Namespace(id=number, code=code, name=name, description="", id_type=kind, created=0)
            for code, number, name, kind in _STANDARD_NAMESPACES
        ]
        return [*standard, *self._namespaces.values()]

    def _namespace_view(self, namespace: Namespace) -> dict[str, Any]:
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
