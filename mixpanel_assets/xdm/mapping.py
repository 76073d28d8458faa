"""Mixpanel event -> XDM ExperienceEvent (AEP notation): a pure function and its spec.

Rules that matter to AEP: no nulls or empty values anywhere (the key is left out), ``timestamp``
as RFC 3339 UTC with milliseconds, ``_id`` a SHA-256 hex digest that is the same every time the
event is exported, one identity per namespace and exactly one primary identity. Standard Mixpanel
properties go to standard XDM fields; when a value cannot take the XDM type (a 3-letter country
code, a non-numeric screen size) it stays, untouched, among the tenant's properties, so nothing
is lost. Everything else lives under ``_<tenant>.mixpanel``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote

import orjson
from pydantic import BaseModel, ConfigDict

from mixpanel_assets.mixpanel.event_time import epoch_seconds, event_time_utc


class InvalidEvent(ValueError):
    """The event cannot become a valid ExperienceEvent; the message is the quarantine reason."""


class IdentityNamespaces(BaseModel):
    """AEP identity namespace codes for Mixpanel's three ids."""

    model_config = ConfigDict(frozen=True)

    distinct_id: str = "MixpanelDistinctId"
    user_id: str = "MixpanelUserId"
    device_id: str = "MixpanelDeviceId"


DEFAULT_EVENT_TYPES = {
    "$mp_web_page_view": "web.webpagedetails.pageViews",
    "$mp_click": "web.webinteraction.linkClicks",
    "$mp_page_leave": "web.webpagedetails.pageViews",
    "Viewed Product": "commerce.productViews",
    "Added to Cart": "commerce.productListAdds",
    "Removed from Cart": "commerce.productListRemovals",
    "Checkout Started": "commerce.checkouts",
    "Purchase": "commerce.purchases",
    "App Open": "application.launch",
    "$ae_first_open": "application.firstLaunches",
    "$ae_updated": "application.upgrades",
    "App Close": "application.close",
}


class MappingSpec(BaseModel):
    """Everything the mapping needs to know besides the event itself."""

    model_config = ConfigDict(frozen=True)

    project_id: str
    tenant_id: str
    event_time: Literal["utc", "project_local"] = "utc"
    project_timezone: str = "UTC"
    identity_namespaces: IdentityNamespaces = IdentityNamespaces()
    event_types: dict[str, str] = DEFAULT_EVENT_TYPES
    default_event_type: str = "mixpanel.event"


Converter = Callable[[Any], Any]

_STATE_PROVINCE = re.compile(r"^[A-Z]{2}-[A-Z0-9]{1,3}$")
_LETTERS2 = re.compile(r"^[A-Za-z]{2}$")
_MOBILE_LIBS = frozenset({"android", "iphone", "swift", "react-native", "flutter", "unity"})


def _text(value: Any) -> str | None:
    """Strings as they are; numbers (``$browser_version: 135``) as their decimal text."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _country_code(value: Any) -> str | None:
    return value.upper() if isinstance(value, str) and _LETTERS2.match(value) else None


def _state_province(value: Any) -> str | None:
    return value if isinstance(value, str) and _STATE_PROVINCE.match(value) else None


def _library_uri(value: Any) -> str | None:
    """``implementationDetails.name`` is a URI in XDM; Mixpanel's ``mp_lib`` is a bare name."""
    text = _text(value)
    return f"https://mixpanel.com/libraries/{quote(text, safe='')}" if text else None


# Mixpanel property -> (XDM path, converter). A value the converter rejects stays a tenant property.
STANDARD_FIELDS: dict[str, tuple[tuple[str, ...], Converter]] = {
    "$current_url": (("web", "webPageDetails", "URL"), _text),
    "current_page_title": (("web", "webPageDetails", "name"), _text),
    "$referrer": (("web", "webReferrer", "URL"), _text),
    "$browser": (("environment", "browserDetails", "name"), _text),
    "$browser_version": (("environment", "browserDetails", "version"), _text),
    "$os": (("environment", "operatingSystem"), _text),
    "$os_version": (("environment", "operatingSystemVersion"), _text),
    "$carrier": (("environment", "carrier"), _text),
    "$device": (("device", "type"), _text),
    "$model": (("device", "model"), _text),
    "$manufacturer": (("device", "manufacturer"), _text),
    "$screen_height": (("device", "screenHeight"), _integer),
    "$screen_width": (("device", "screenWidth"), _integer),
    "$city": (("placeContext", "geo", "city"), _text),
    "$region": (("placeContext", "geo", "stateProvince"), _state_province),
    "mp_country_code": (("placeContext", "geo", "countryCode"), _country_code),
    "$app_version_string": (("application", "version"), _text),
    "$app_release": (("application", "id"), _text),
    "utm_source": (("marketing", "trackingCode"), _text),
    "utm_medium": (("marketing", "campaignGroup"), _text),
    "utm_campaign": (("marketing", "campaignName"), _text),
    "mp_lib": (("implementationDetails", "name"), _library_uri),
    "$lib_version": (("implementationDetails", "version"), _text),
}

# Mixpanel's own bookkeeping -> _<tenant>.mixpanel.<field>, kept with its JSON type.
INTERNAL_FIELDS: dict[str, tuple[str, Converter]] = {
    "distinct_id": ("distinctId", _text),
    "$device_id": ("deviceId", _text),
    "$user_id": ("userId", _text),
    "$insert_id": ("insertId", _text),
    "mp_processing_time_ms": ("processingTimeMs", _integer),
    "$mp_api_timestamp_ms": ("apiTimestampMs", _integer),
    "$mp_api_endpoint": ("apiEndpoint", _text),
    "$import": ("imported", lambda value: value if isinstance(value, bool) else None),
}

_DEVICE_PREFIX = "$device:"
# AEP rejects events that happen in the future; allow for clock skew between machines.
_FUTURE_TOLERANCE = timedelta(minutes=5)


def parse_event(line: bytes) -> tuple[str, dict[str, Any]]:
    """The event name and properties of one export line."""
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError as problem:
        raise InvalidEvent(f"not JSON: {problem}") from None
    if not isinstance(event, dict):
        raise InvalidEvent("not a JSON object")
    name, properties = event.get("event"), event.get("properties")
    if not isinstance(name, str) or not name:
        raise InvalidEvent("no event name: 'event' is missing or not a non-empty string")
    if not isinstance(properties, dict):
        raise InvalidEvent("no properties: 'properties' is missing or not an object")
    return name, properties


def dedup_key(name: str, properties: dict[str, Any]) -> bytes:
    """Mixpanel's dedup key (event, distinct_id, time, $insert_id), as a 16-byte digest.

    Mixpanel never deduplicates events without ``$insert_id``; we treat two such events as the
    same only when every property is equal, so an exact repeat is dropped and nothing else is.
    """
    insert_id = properties.get("$insert_id")
    if insert_id is not None:
        key = [name, properties.get("distinct_id"), properties.get("time"), insert_id]
    else:
        key = [name, properties]
    return hashlib.blake2b(orjson.dumps(key, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()


def event_id(spec: MappingSpec, name: str, properties: dict[str, Any]) -> str:
    """``_id``: SHA-256 of project, event, time (ms) and ``$insert_id``.

    ``distinct_id`` stays out because Mixpanel rewrites it on identity merges, so a re-export
    would otherwise produce a new id. Without ``$insert_id`` the digest covers every property but
    ``distinct_id`` instead: stable across re-exports, distinct for distinct events.
    """
    time_ms = round(epoch_seconds(properties["time"]) * 1000)
    insert_id = properties.get("$insert_id")
    if insert_id is not None:
        material = f"{spec.project_id}|{name}|{time_ms}|{insert_id}".encode()
    else:
        rest = {key: value for key, value in properties.items() if key != "distinct_id"}
        material = f"{spec.project_id}|{name}|{time_ms}|".encode() + orjson.dumps(
            rest, option=orjson.OPT_SORT_KEYS
        )
    return hashlib.sha256(material).hexdigest()


def to_xdm(name: str, properties: dict[str, Any], spec: MappingSpec) -> dict[str, Any]:
    """The XDM ExperienceEvent for one Mixpanel event; raises ``InvalidEvent`` with the reason."""
    raw_time = properties.get("time")
    if not isinstance(raw_time, int | float) or isinstance(raw_time, bool) or raw_time <= 0:
        raise InvalidEvent(f"no usable time: 'time' is {raw_time!r}, expected epoch seconds")
    instant = event_time_utc(raw_time, regime=spec.event_time, timezone=spec.project_timezone)
    if instant > datetime.now(UTC) + _FUTURE_TOLERANCE:
        raise InvalidEvent(
            f"time {instant.isoformat()} is in the future; AEP only accepts past events "
            "(if many events do this, check MIXPANEL_EVENT_TIME and MIXPANEL_PROJECT_TIMEZONE)"
        )
    record: dict[str, Any] = {
        "_id": event_id(spec, name, properties),
        "timestamp": instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{instant.microsecond // 1000:03d}Z",
        "eventType": spec.event_types.get(name, spec.default_event_type),
        "identityMap": _identity_map(properties, spec.identity_namespaces),
    }
    mixpanel: dict[str, Any] = {"eventName": name, "time": raw_time}
    custom: dict[str, str] = {}
    for key, value in properties.items():
        if key == "time" or _is_empty(value):
            continue
        if key in STANDARD_FIELDS:
            path, convert = STANDARD_FIELDS[key]
            converted = convert(value)
            if converted is not None:
                _set_path(record, path, converted)
                continue
        elif key in INTERNAL_FIELDS:
            field, convert = INTERNAL_FIELDS[key]
            converted = convert(value)
            if converted is not None:
                mixpanel[field] = converted
                continue
        custom[key] = value if isinstance(value, str) else orjson.dumps(value).decode()
    if custom:
        mixpanel["properties"] = custom
    if "environment" in record or "mp_lib" in properties:
        environment = record.setdefault("environment", {})
        environment["type"] = _environment_type(properties.get("mp_lib"))
    record[f"_{spec.tenant_id}"] = {"mixpanel": mixpanel}
    return record


def _identity_map(properties: dict[str, Any], namespaces: IdentityNamespaces) -> dict[str, Any]:
    """One identity per namespace, exactly one of them primary.

    A ``$device:<id>`` distinct_id is an anonymous user: its device id is the identity. The
    primary is the most durable id present: distinct_id, then ``$user_id``, then the device.
    """
    distinct_id = _text(properties.get("distinct_id"))
    user_id = _text(properties.get("$user_id"))
    device_id = _text(properties.get("$device_id"))
    if distinct_id and distinct_id.startswith(_DEVICE_PREFIX):
        device_id = device_id or distinct_id[len(_DEVICE_PREFIX) :] or None
        distinct_id = None
    identities: list[tuple[str, str, str]] = []
    if distinct_id:
        identities.append((namespaces.distinct_id, distinct_id, "ambiguous"))
    if user_id:
        identities.append((namespaces.user_id, user_id, "authenticated"))
    if device_id:
        identities.append((namespaces.device_id, device_id, "ambiguous"))
    if not identities:
        raise InvalidEvent("no identity: distinct_id, $user_id and $device_id are all missing")
    return {
        namespace: [{"id": value, "authenticatedState": state, "primary": index == 0}]
        for index, (namespace, value, state) in enumerate(identities)
    }


def _environment_type(library: Any) -> str:
    return "application" if isinstance(library, str) and library in _MOBILE_LIBS else "browser"


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _set_path(record: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    target = record
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
