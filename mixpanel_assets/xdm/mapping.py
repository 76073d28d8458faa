"""Mixpanel event -> XDM ExperienceEvent (AEP notation): a pure function of the event and a spec.

Design notes: docs/design-notes.md, `xdm/mapping.py`.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cached_property, lru_cache
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from mixpanel_assets.mixpanel.event_time import epoch_seconds, event_time_utc
from mixpanel_assets.xdm.conversions import CONVERSIONS, as_string
from mixpanel_assets.xdm.generated_code import Target
from mixpanel_assets.xdm.property_writers import PropertyWriters
from mixpanel_assets.xdm.schema import (
    CustomField,
    FieldPaths,
    cut_record_schema,
    record_validator,
    tenant_field_group,
    value_checker,
)
from mixpanel_assets.xdm.spec import TENANT_OBJECT, MappingRules, default_rules
from mixpanel_assets.xdm.validity import Arr, Fact, Leaf, Map, Obj, Proof, prove, record_fact


class InvalidEvent(ValueError):
    """The event cannot become a valid ExperienceEvent; the message is the quarantine reason."""


class MappingSpec(BaseModel):
    """Everything the mapping needs to know besides the event itself."""

    model_config = ConfigDict(frozen=True)

    project_id: str
    tenant_id: str
    event_time: Literal["utc", "project_local"] = "utc"
    project_timezone: str = "UTC"
    rules: MappingRules = Field(default_factory=default_rules)

    @cached_property
    def compiled(self) -> CompiledMapping:
        """The mapping compiled for this spec, once."""
        return CompiledMapping.build(self)


@dataclass(frozen=True, slots=True)
class CompiledMapping:
    """A spec as plain lookups, resolved for one tenant: what ``to_xdm`` reads per event."""

    project_id: str
    tenant_key: str
    event_time: str
    project_timezone: str
    targets: dict[str, Target]
    parent_paths: int  # distinct parent paths among the targets
    writers: PropertyWriters
    event_types: dict[str, str]
    default_event_type: str
    namespaces: tuple[str, str, str]
    application_libraries: frozenset[str]
    custom_tenant_fields: tuple[CustomField, ...]
    # Every field ``map_event`` may write (the tenant object as a whole).
    record_paths: FieldPaths
    # The schema's verdict on a record, fastest on one of ``record_paths``' fields.
    is_valid: Callable[[dict[str, Any]], bool]
    # That every record fits the schema (``validity``), or None and why not: then every record
    # is validated in full.
    proof: Proof | None
    proof_problems: tuple[str, ...]

    @classmethod
    def build(cls, spec: MappingSpec) -> CompiledMapping:
        """Compile ``spec``: each property's target and conversion, the validator and proof."""
        tenant_field_group(spec.tenant_id)  # fails early, naming AEP_TENANT_ID, if malformed
        tenant_key = f"_{spec.tenant_id}"
        rules = spec.rules
        targets: dict[str, Target] = {}
        parent_numbers: dict[tuple[str, ...], int] = {}
        for name, mapping in rules.properties.items():
            path = mapping.path
            resolved = (tenant_key, *path[1:]) if path[0] == TENANT_OBJECT else path
            parents = resolved[:-1]
            number = parent_numbers.setdefault(parents, len(parent_numbers))
            convert = CONVERSIONS[mapping.type].convert
            fits = value_checker(path)
            if fits is not None:  # a pure test of a converted scalar; few distinct values
                fits = lru_cache(maxsize=_VALUE_VERDICTS_KEPT, typed=True)(fits)
            targets[name] = (parents, number, resolved[-1], convert, fits)
        namespaces = rules.identity_namespaces
        custom_tenant_fields = rules.custom_tenant_fields()
        paths = {*_FIXED_PATHS, (tenant_key,)}
        paths.update((*parents, field) for parents, _, field, _, _ in targets.values())
        record_paths = frozenset(paths)
        proof, problems = prove(
            cut_record_schema(spec.tenant_id, custom_tenant_fields, record_paths),
            _record_fact(tenant_key, targets, rules),
        )
        return cls(
            project_id=spec.project_id,
            tenant_key=tenant_key,
            event_time=spec.event_time,
            project_timezone=spec.project_timezone,
            targets=targets,
            parent_paths=len(parent_numbers),
            writers=PropertyWriters(targets, len(parent_numbers), _property_text),
            event_types=dict(rules.event_types.by_event),
            default_event_type=rules.event_types.default,
            namespaces=(namespaces.distinct_id, namespaces.user_id, namespaces.device_id),
            application_libraries=frozenset(rules.application_libraries),
            custom_tenant_fields=custom_tenant_fields,
            record_paths=record_paths,
            is_valid=record_validator(spec.tenant_id, custom_tenant_fields, record_paths),
            proof=proof,
            proof_problems=tuple(problems),
        )


def _record_fact(tenant_key: str, targets: dict[str, Target], rules: MappingRules) -> Obj:
    """What ``map_event`` writes, for ``validity.prove``."""
    identity = Obj(
        {
            "id": Leaf("string"),
            "authenticatedState": Leaf("string", values=frozenset(_AUTHENTICATED_STATES)),
            "primary": Leaf("boolean"),
        },
        always=frozenset({"id", "authenticatedState", "primary"}),
    )
    ids = rules.identity_namespaces
    event_types = frozenset({rules.event_types.default, *rules.event_types.by_event.values()})
    facts: list[tuple[tuple[str, ...], Fact]] = [
        (("_id",), Leaf("string", form="sha256-hex")),
        (("timestamp",), Leaf("string", form="rfc3339-ms")),
        (("eventType",), Leaf("string", values=event_types)),
        (
            ("identityMap",),
            Obj(
                {
                    namespace: Arr(identity)
                    for namespace in (ids.distinct_id, ids.user_id, ids.device_id)
                }
            ),
        ),
        (("environment", "type"), Leaf("string", values=frozenset(_ENVIRONMENT_TYPES))),
        ((tenant_key, "mixpanel", "eventName"), Leaf("string")),
        ((tenant_key, "mixpanel", "time"), Leaf("number")),
        ((tenant_key, "mixpanel", "properties"), Map(Leaf("string"))),
    ]
    for name, (parents, _, field, _, fits) in targets.items():
        json_type = CONVERSIONS[rules.properties[name].type].json_type
        facts.append(((*parents, field), Leaf(json_type, checked=fits is not None)))
    always = {
        (): frozenset({"_id", "timestamp", "eventType", "identityMap", tenant_key}),
        (tenant_key,): frozenset({"mixpanel"}),
        (tenant_key, "mixpanel"): frozenset({"eventName", "time"}),
    }
    return record_fact(facts, always)


# The fields ``map_event`` fills itself, besides the tenant object and the mapped properties.
_FIXED_PATHS = (("_id",), ("timestamp",), ("eventType",), ("identityMap",), ("environment", "type"))
_DEVICE_PREFIX = "$device:"
# The values ``map_event`` writes to identityMap's authenticatedState and environment.type.
_AUTHENTICATED_STATES = ("ambiguous", "authenticated")
_ENVIRONMENT_TYPES = ("application", "browser")
# AEP rejects events that happen in the future; allow for clock skew between machines.
FUTURE_TOLERANCE_SECONDS = 300
DEDUP_KEY_BYTES = 16
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_YEAR_10000 = 253_402_300_800  # epoch seconds at 10000-01-01, past datetime's range
# Verdicts on mapped values kept per field (country codes, library URIs: a few hundred).
_VALUE_VERDICTS_KEPT = 4096
# The integers orjson writes (it refuses others, which are quarantined with its message).
_LONG_MIN, _ULONG_MAX = -(2**63), 2**64 - 1


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
    insert_id = as_string(properties.get("$insert_id"))
    if insert_id is not None:
        key = [name, properties.get("distinct_id"), properties.get("time"), insert_id]
    else:
        key = [name, properties]
    return hashlib.blake2b(_json(key, "the dedup key"), digest_size=DEDUP_KEY_BYTES).digest()


def event_id(spec: MappingSpec, name: str, properties: dict[str, Any]) -> str:
    """``_id``: SHA-256 of project, event, time (ms) and ``$insert_id``.

    ``distinct_id`` stays out because Mixpanel rewrites it on identity merges, so a re-export
    would otherwise produce a new id. Without ``$insert_id`` the digest covers every property but
    ``distinct_id`` instead: stable across re-exports, distinct for distinct events.
    """
    return _event_id(
        spec.project_id, name, epoch_seconds(_usable_time(properties.get("time"))), properties
    )


def to_xdm(name: str, properties: dict[str, Any], spec: MappingSpec) -> dict[str, Any]:
    """The XDM ExperienceEvent for one Mixpanel event; raises ``InvalidEvent`` with the reason."""
    return map_event(name, properties, spec.compiled)[0]


def map_event(
    name: str, properties: dict[str, Any], mapping: CompiledMapping, latest: float | None = None
) -> tuple[dict[str, Any], float]:
    """``to_xdm`` on a compiled spec, plus the event's true UTC instant in epoch seconds.

    It never writes None or an empty string, list or object (AEP rejects them): every value is
    a digest, a timestamp, a non-empty name or id, a conversion's output (None when it cannot
    convert, non-empty otherwise) or a property kept only when not empty, and every object it
    makes holds at least one of them. So its records need no scan for empty values.
    """
    raw_time = _usable_time(properties.get("time"))
    epoch = epoch_seconds(raw_time)
    seconds = epoch if mapping.event_time == "utc" else _utc_seconds(raw_time, mapping)
    if latest is None:
        latest = time.time() + FUTURE_TOLERANCE_SECONDS
    if seconds > latest:
        raise InvalidEvent(
            f"in the future: time {raw_time!r} is {_rfc3339(seconds)}; AEP only accepts past "
            "events (if many events do this, check MIXPANEL_EVENT_TIME and "
            "MIXPANEL_PROJECT_TIMEZONE)"
        )
    record: dict[str, Any] = {
        "_id": _event_id(mapping.project_id, name, epoch, properties),
        "timestamp": _rfc3339(seconds),
        "eventType": mapping.event_types.get(name, mapping.default_event_type),
        "identityMap": _identity_map(properties, mapping.namespaces),
    }
    mixpanel: dict[str, Any] = {"eventName": name, "time": raw_time}
    record[mapping.tenant_key] = {"mixpanel": mixpanel}
    writer = mapping.writers.by_layout.get(tuple(properties))
    if writer is None:
        custom = mapping.writers.write(properties, record)
    else:
        custom = writer(properties, record)
    if custom:
        mixpanel["properties"] = custom
    environment_type = _environment_type(properties, mapping.application_libraries)
    if environment_type:
        record.setdefault("environment", {})["type"] = environment_type
    return record, seconds


def timestamp_proven(seconds: float) -> bool:
    """Whether ``_rfc3339`` gives the proof's ``rfc3339-ms`` form for ``seconds``.

    True for what the tables or ``datetime`` give, from 1970 to 9999 (not the text it falls back
    on).
    """
    return 0 <= seconds < _YEAR_10000


def _usable_time(raw_time: Any) -> int | float:
    if type(raw_time) not in (int, float) or not 0 < raw_time < math.inf:
        raise InvalidEvent(f"no usable time: 'time' is {raw_time!r}, expected epoch seconds")
    return raw_time


def _utc_seconds(raw_time: int | float, mapping: CompiledMapping) -> float:
    if mapping.event_time == "utc":
        return epoch_seconds(raw_time)
    try:
        instant = event_time_utc(
            raw_time, regime=mapping.event_time, timezone=mapping.project_timezone
        )
    except (OverflowError, OSError, ValueError):
        raise InvalidEvent(f"no usable time: 'time' is {raw_time!r}, past year 9999") from None
    return instant.timestamp()


def _rfc3339(seconds: float) -> str:
    """``2025-05-01T11:12:50.123Z``: RFC 3339 UTC with milliseconds, as AEP wants."""
    if seconds.is_integer() and 0 <= seconds < _YEAR_10000:  # most events: from two tables
        minutes, second = divmod(int(seconds), 60)
        return _utc_minute(minutes) + _SECOND_AND_MILLISECONDS[second]
    try:
        instant = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return f"{seconds:.0f} s after the epoch"  # only ever shown in a quarantine reason
    return instant.isoformat(timespec="milliseconds")[:-6] + "Z"


@lru_cache(maxsize=4096)  # a day's events fall within about 1,440 minutes (out of time order)
def _utc_minute(minutes_since_epoch: int) -> str:
    """``2025-05-01T11:12:``"""
    days, minute = divmod(minutes_since_epoch, 1440)
    day = date.fromordinal(_EPOCH_ORDINAL + days).isoformat()
    return f"{day}T{minute // 60:02d}:{minute % 60:02d}:"


_SECOND_AND_MILLISECONDS = tuple(f"{second:02d}.000Z" for second in range(60))


def _event_id(project_id: str, name: str, epoch: float, properties: dict) -> str:
    """``event_id`` from the event's ``epoch_seconds``."""
    time_ms = round(epoch * 1000)
    insert_id = properties.get("$insert_id")
    if type(insert_id) is not str:
        insert_id = as_string(insert_id)
    if insert_id:
        material = f"{project_id}|{name}|{time_ms}|{insert_id}".encode()
    else:
        rest = {key: value for key, value in properties.items() if key != "distinct_id"}
        material = f"{project_id}|{name}|{time_ms}|".encode() + _json(rest, "the properties")
    return hashlib.sha256(material).hexdigest()


def _identity_map(properties: dict[str, Any], namespaces: tuple[str, str, str]) -> dict[str, Any]:
    """One identity per namespace, exactly one of them primary.

    A ``$device:<id>`` distinct_id is an anonymous user: its device id is the identity. The
    primary is the most durable id present: distinct_id, then ``$user_id``, then the device.
    """
    # Strings as they are (an empty one counts as missing below), anything else as_string's.
    distinct_id = properties.get("distinct_id")
    if type(distinct_id) is not str:
        distinct_id = as_string(distinct_id)
    user_id = properties.get("$user_id")
    if type(user_id) is not str:
        user_id = as_string(user_id)
    device_id = properties.get("$device_id")
    if type(device_id) is not str:
        device_id = as_string(device_id)
    if distinct_id and distinct_id.startswith(_DEVICE_PREFIX):
        device_id = device_id or distinct_id[len(_DEVICE_PREFIX) :] or None
        distinct_id = None
    distinct_namespace, user_namespace, device_namespace = namespaces
    identities: dict[str, Any] = {}
    if distinct_id:
        identities[distinct_namespace] = [
            {"id": distinct_id, "authenticatedState": "ambiguous", "primary": True}
        ]
    if user_id:
        identities[user_namespace] = [
            {"id": user_id, "authenticatedState": "authenticated", "primary": not identities}
        ]
    if device_id:
        identities[device_namespace] = [
            {"id": device_id, "authenticatedState": "ambiguous", "primary": not identities}
        ]
    if not identities:
        raise InvalidEvent("no identity: distinct_id, $user_id and $device_id are all missing")
    return identities


def _environment_type(properties: dict[str, Any], application_libraries: frozenset[str]) -> str:
    library = properties.get("mp_lib")
    if type(library) is str and library in application_libraries:
        return "application"
    return "browser" if as_string(properties.get("$browser")) else ""


def _property_text(value: Any, key: str) -> str:
    """A property value that is not a string as JSON text (booleans and integers, the most
    common, written here directly: the same text as orjson's)."""
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is int and _LONG_MIN <= value <= _ULONG_MAX:
        return str(value)
    return _json(value, f"property {key!r}", option=0).decode()


def _json(value: Any, what: str, option: int = orjson.OPT_SORT_KEYS) -> bytes:
    """JSON bytes of ``value``; keys sorted by default, so equal content gives equal digests."""
    try:
        return orjson.dumps(value, option=option)
    except orjson.JSONEncodeError as problem:
        raise InvalidEvent(f"not encodable: {what} cannot be written as JSON ({problem})") from None
