"""Property-based tests: Mixpanel-shaped export lines, odd ones included, either become records
valid against the official XDM schemas (checked by the full jsonschema validator, not the
compiled fast path the mapper uses) with every property kept, or are quarantined with reasons.
The mapper never raises."""

import re
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mixpanel_assets.xdm.line_mapping import MappedEvent, map_line
from mixpanel_assets.xdm.mapping import MappingSpec, event_id, to_xdm
from mixpanel_assets.xdm.schema import empty_value_paths, xdm_validator
from mixpanel_assets.xdm.spec import TENANT_OBJECT, default_rules

TENANT = "acme"
SPEC = MappingSpec(project_id="2384945", tenant_id=TENANT)
RULES = default_rules()
NOW = int(time.time())
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
integers = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what orjson can write
usable_times = st.one_of(
    st.integers(min_value=1_000_000_000, max_value=NOW),  # seconds
    st.floats(min_value=1e9, max_value=NOW, allow_nan=False),  # fractional seconds
    st.integers(min_value=10**12, max_value=NOW * 1000),  # milliseconds
)
odd_times = st.one_of(
    st.integers(min_value=NOW + 3600, max_value=2**64 - 1),  # the future, or past year 9999
    json_values,  # a string, a negative number, null, an object...
)
usable_ids = st.one_of(
    st.text(min_size=1, max_size=20),
    st.builds(lambda rest: f"$device:{rest}", st.text(max_size=12)),
)
ids = st.one_of(usable_ids, integers, json_values)
# Values shaped like what each standard property holds, and odd ones.
standard_values = {
    "mp_country_code": st.from_regex(r"[A-Za-z]{2,3}", fullmatch=True),
    "$region": st.sampled_from(["US-CA", "JP-13", "Karnataka", "us-ca", "US-CA\n"]),
    "$screen_height": st.one_of(
        integers, st.from_regex(r"-?[0-9]{1,25}", fullmatch=True), st.floats()
    ),
    "$current_url": st.sampled_from(["https://example.com/a b", "$direct", "mailto:x@y.z", ""]),
    "$referrer": st.sampled_from(["https://www.google.com/", "$direct"]),
    "mp_lib": st.sampled_from(["web", "android", "iphone", "python", "Segment: analytics.js"]),
    "$browser_version": st.one_of(integers, st.floats(allow_nan=False), st.text()),
}
standard_properties = st.fixed_dictionaries(
    {},
    optional={
        name: standard_values.get(name, json_values)
        for name in RULES.properties
        if name not in ("distinct_id", "$user_id", "$device_id")
    },
)
custom_properties = st.dictionaries(
    st.text(max_size=10).filter(lambda name: name not in RULES.properties and name != "time"),
    json_values,
    max_size=5,
)
event_names = st.sampled_from(["$mp_web_page_view", "Purchase", "App Open", "Sign Up"]) | st.text()


@st.composite
def mixpanel_events(draw: st.DrawFn) -> tuple[Any, dict[str, Any]]:
    properties: dict[str, Any] = {}
    odd = draw(st.integers(min_value=0, max_value=3)) == 0  # a quarter of events are odd ones
    if not odd or draw(st.booleans()):
        properties["time"] = draw(odd_times if odd else usable_times)
    for name in ("distinct_id", "$user_id", "$device_id", "$insert_id"):
        if draw(st.booleans()):
            properties[name] = draw(ids if odd else usable_ids)
    if not odd:
        properties.setdefault("distinct_id", draw(usable_ids))
    properties |= draw(standard_properties)
    properties |= draw(custom_properties)
    return draw(event_names), properties


@st.composite
def export_lines(draw: st.DrawFn) -> bytes:
    name, properties = draw(mixpanel_events())
    shape = draw(st.sampled_from(["event"] * 9 + ["no name", "not an object", "bytes"]))
    if shape == "no name":
        return orjson.dumps({"properties": properties})
    if shape == "not an object":
        return orjson.dumps({"event": name, "properties": list(properties)})
    if shape == "bytes":
        return draw(st.binary(max_size=40))
    return orjson.dumps({"event": name, "properties": properties})


def _value_at(record: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = record
    for name in path:
        node = node.get(name) if isinstance(node, dict) else None
    return node


def _assert_every_property_is_kept(record: dict[str, Any], properties: dict[str, Any]) -> None:
    tenant = record[f"_{TENANT}"]["mixpanel"]
    custom = tenant.get("properties", {})
    for key, value in properties.items():
        if key == "time" or value is None or value in ("", [], {}):
            assert key not in custom
            continue
        if key in custom:
            kept = custom[key] if isinstance(value, str) else orjson.loads(custom[key])
            assert kept == value, key
            continue
        mapping = RULES.properties[key]  # not in the string map: must be a mapped field
        path = (
            (f"_{TENANT}", *mapping.path[1:]) if mapping.path[0] == TENANT_OBJECT else mapping.path
        )
        assert _value_at(record, path) is not None, key


@SETTINGS
@given(export_lines())
def test_every_line_becomes_a_valid_record_or_a_reasoned_quarantine(line: bytes) -> None:
    outcome = map_line(line, SPEC)
    if not isinstance(outcome, MappedEvent):
        event(f"quarantined: {outcome[0].split(':')[0]}")
        assert outcome and all(isinstance(reason, str) and reason for reason in outcome)
        return
    event("mapped")
    record = outcome.record
    assert list(xdm_validator(TENANT).iter_errors(record)) == []
    assert empty_value_paths(record) == []
    assert re.fullmatch(r"[0-9a-f]{64}", record["_id"])
    instant = datetime.fromisoformat(record["timestamp"])
    assert instant.timestamp() <= time.time() + 300
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["timestamp"])
    primaries = [item for items in record["identityMap"].values() for item in items]
    assert all(len(items) == 1 for items in record["identityMap"].values())
    assert sum(item["primary"] for item in primaries) == 1
    document = orjson.loads(line)
    assert record[f"_{TENANT}"]["mixpanel"]["eventName"] == document["event"]
    _assert_every_property_is_kept(record, document["properties"])


@settings(max_examples=100, deadline=None)
@given(mixpanel_events(), ids)
def test_the_id_survives_a_re_export_with_another_distinct_id(
    generated: tuple[Any, dict[str, Any]], merged_distinct_id: Any
) -> None:
    name, properties = generated
    if not isinstance(name, str) or not name:
        return
    properties["time"] = NOW - 86400
    re_exported = dict(reversed(list({**properties, "distinct_id": merged_distinct_id}.items())))
    assert event_id(SPEC, name, properties) == event_id(SPEC, name, re_exported)


@SETTINGS
@given(st.integers(min_value=1, max_value=NOW) | st.floats(min_value=1e-3, max_value=NOW))
def test_the_timestamp_is_the_events_instant_in_rfc3339(seconds: float) -> None:
    properties = {"time": seconds, "distinct_id": "u1", "$insert_id": "i1"}
    record = to_xdm("Page View", properties, SPEC)
    instant = datetime.fromtimestamp(seconds, UTC)
    assert record["timestamp"] == instant.isoformat(timespec="milliseconds")[:-6] + "Z"
