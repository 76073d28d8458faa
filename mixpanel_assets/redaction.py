"""Credentials out of URLs and texts before they reach an exception, a log or metadata."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

HIDDEN = "***"
# Query parameters that never hold a secret: kept so that a redacted URL still says what it is.
# Any other parameter's value is hidden (password=, sig=, token=, X-Amz-Signature=, ...).
_HARMLESS_PARAMETERS = frozenset(
    {
        "application_name",
        "connect_timeout",
        "keepalives",
        "keepalives_count",
        "keepalives_idle",
        "keepalives_interval",
        "options",
        "sslmode",
        "target_session_attrs",
    }
)
# A URL inside free text: a scheme, then everything up to whitespace or a closing quote.
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def redact_url(url: str) -> str:
    """``url`` with its password, and the values of its query parameters, replaced by ***."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return HIDDEN  # not even a URL: say nothing of it
    netloc = parts.netloc
    if password is not None or "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{HIDDEN}@{host}" if password is not None else f"{user}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(name, value if name in _HARMLESS_PARAMETERS else HIDDEN) for name, value in pairs],
            safe="*",
        )
    fragment = HIDDEN if parts.fragment else ""
    return urlunsplit(parts._replace(netloc=netloc, query=query, fragment=fragment))


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with every URL in it redacted and every one of ``secrets`` replaced by ***."""
    redacted = _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)
    for secret in secrets:
        if secret:
            redacted = redacted.replace(secret, HIDDEN)
    return redacted


def is_loopback_host(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: the only hosts plain http may reach."""
    if not host:
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_https(variable: str, url: str, example: str) -> str:
    """``url`` when it is https (or http to loopback); otherwise an error naming ``variable``.

    Credentials and tokens travel with every request, so a real endpoint is only ever https.
    """
    from mixpanel_assets.errors import ConfigError

    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if parts is None or not host or parts.scheme not in ("http", "https"):
        raise ConfigError(
            f"{variable}={redact_url(url)!r} is not an https URL: give the full URL, e.g. "
            f"{example}."
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"{variable} must not carry credentials in the URL ({redact_url(url)}): the "
            "project's credential variables hold them."
        )
    if parts.query or parts.fragment:
        raise ConfigError(
            f"{variable}={redact_url(url)!r} must not carry a query string or fragment: the "
            f"client adds its own parameters; give the bare URL, e.g. {example}."
        )
    if parts.scheme == "http" and not is_loopback_host(host):
        raise ConfigError(
            f"{variable}={redact_url(url)!r} uses plain http: credentials and tokens would "
            f"cross the network unencrypted. Use https (e.g. {example}); plain http is only "
            "accepted to loopback (127.0.0.1, localhost), as the local sandbox uses."
        )
    return url
