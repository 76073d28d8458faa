"""The code written per property layout does exactly what the property loop does: the same
fields with the same values in the same key order, the same properties kept as text, the same
errors; and ``map_event`` gives the same record before and after a layout's code exists (here
written at a layout's second sighting, not after ``SIGHTINGS_BEFORE_CODE``). The
booleans and integers kept as text skip orjson, and read as orjson writes them."""

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixpanel_assets.xdm import property_writers
from mixpanel_assets.xdm.conversions import as_integer
from mixpanel_assets.xdm.mapping import (
    InvalidEvent,
    MappingSpec,
    _property_text,
    map_event,
    parse_event,
)
from mixpanel_assets.xdm.property_writers import PropertyWriters, Target, write_properties

MAPPING = MappingSpec(project_id="3141592", tenant_id="acme").compiled
# The default targets, plus one for ``time`` (which the loop otherwise skips) and one whose
# parent already exists in every record (the tenant's mixpanel object).
TARGETS: dict[str, Target] = {
    **MAPPING.targets,
    "time": (("_acme", "extra"), MAPPING.parent_paths, "time", as_integer, None),
    "plan": (("_acme", "mixpanel"), MAPPING.parent_paths + 1, "plan", as_integer, None),
}
PARENT_PATHS = MAPPING.parent_paths + 2

# Values as parsed JSON may hold them, weighted towards what the conversions look at: country
# and subdivision codes, URLs, numbers as text, empty values, integers past 64 bits.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.sampled_from(["", "gb", "GB", "US-CA", "England", "https://a.example/p", "$direct"]),
    st.sampled_from(["1440", "12.5", "-3", "android", "0"]),
    st.text(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
names = st.sampled_from(sorted(TARGETS)) | st.text(max_size=6)
property_dicts = st.dictionaries(names, values, max_size=12)


def _fresh_record() -> dict[str, Any]:
    return {"_id": "x", "_acme": {"mixpanel": {"eventName": "e"}}}


def _outcome(write: Any, properties: dict[str, Any]) -> tuple[bytes, bytes] | str:
    """What a writer leaves: the record and the kept properties as JSON (key order included),
    or the error it raised."""
    record = _fresh_record()
    try:
        custom = write(properties, record)
    except InvalidEvent as problem:
        return f"InvalidEvent: {problem}"
    return orjson.dumps(record), orjson.dumps(custom)


@settings(max_examples=400, deadline=None)
@given(properties=property_dicts)
def test_written_code_does_what_the_loop_does(properties: dict[str, Any]) -> None:
    writers = PropertyWriters(TARGETS, PARENT_PATHS, _property_text)

    def loop(props: dict[str, Any], record: dict[str, Any]) -> dict[str, str]:
        return write_properties(props, record, TARGETS, PARENT_PATHS, _property_text)

    assert _outcome(writers.writer_for(tuple(properties)), properties) == _outcome(loop, properties)


def test_a_layout_gets_its_code_the_second_time_and_the_record_stays_the_same(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(property_writers, "SIGHTINGS_BEFORE_CODE", 2)
    spec = MappingSpec(project_id="3141592", tenant_id="acme")
    line = (
        b'{"event":"Purchase","properties":{"time":1714560000,"distinct_id":"u1",'
        b'"mp_country_code":"gb","$screen_height":"2400","$wifi":true,"cart":[1,{"a":null}],'
        b'"$region":"England","mp_lib":"android","empty":""}}'
    )
    name, properties = parse_event(line)
    layout = tuple(properties)
    records = []
    for _ in range(3):
        records.append(orjson.dumps(map_event(name, dict(properties), spec.compiled)[0]))
        if len(records) == 1:
            assert layout not in spec.compiled.writers.by_layout  # once: the loop
    assert layout in spec.compiled.writers.by_layout
    assert records[0] == records[1] == records[2]
    assert b'"countryCode":"GB"' in records[0] and b'"$wifi":"true"' in records[0]


def test_layouts_past_the_limit_take_the_loop(monkeypatch: Any) -> None:
    monkeypatch.setattr(property_writers, "MAX_LAYOUTS", 2)
    monkeypatch.setattr(property_writers, "SIGHTINGS_BEFORE_CODE", 2)
    writers = PropertyWriters(TARGETS, PARENT_PATHS, _property_text)
    events = [{"distinct_id": "u", f"p{number}": number} for number in range(4)]
    outcomes = []
    for _ in range(2):
        for properties in events:
            record = _fresh_record()
            outcomes.append((writers.write(properties, record), record))
    assert len(writers.by_layout) == 2
    assert outcomes[:4] == outcomes[4:]
    assert outcomes[3][0] == {"p3": "3"}


def test_booleans_and_integers_kept_as_text_read_as_orjson_writes_them() -> None:
    for value in (True, False, 0, -1, 1440, 2**63 - 1, -(2**63), 2**64 - 1):
        assert _property_text(value, "p") == orjson.dumps(value).decode()
    for value in (2**64, -(2**63) - 1):  # orjson refuses them: the event is quarantined
        with pytest.raises(InvalidEvent, match="property 'p' cannot be written as JSON"):
            _property_text(value, "p")


def test_a_layout_gets_its_code_only_once_it_is_common() -> None:
    writers = PropertyWriters(TARGETS, PARENT_PATHS, _property_text)
    properties = {"distinct_id": "u", "p": 1}
    for _ in range(100):  # a rare layout: writing its code would cost more than it saves
        writers.write(properties, _fresh_record())
    assert not writers.by_layout
    for _ in range(property_writers.SIGHTINGS_BEFORE_CODE - 100):
        writers.write(properties, _fresh_record())
    assert tuple(properties) in writers.by_layout
