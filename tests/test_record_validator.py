"""The fast record validator gives the whole compiled schema's verdict, and leaves the record
as the whole schema does (defaults written), on records on and off the mapping's paths."""

import copy
from typing import Any

import fastjsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixpanel_assets.xdm.mapping import MappingSpec
from mixpanel_assets.xdm.schema import (
    _compiled_validator,
    empty_value_paths,
    field_schemas,
    record_acceptor,
    record_validator,
)

TENANT = "acme"
MAPPING = MappingSpec(project_id="1", tenant_id=TENANT).compiled
FULL = _compiled_validator(TENANT, MAPPING.custom_tenant_fields)
ACCEPTS = record_acceptor(TENANT, MAPPING.custom_tenant_fields, MAPPING.record_paths)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [
            "",
            "US",
            "us",
            "US-CA",
            "browser",
            "desktop",
            "ambiguous",
            "https://mixpanel.com/libraries/web",
            "has space",
            "2026-11-01T10:00:00.123Z",
            "2026-13-01T10:00:00Z",
            "4f1c0b",
        ]
    ),
    st.text(max_size=8),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)


def _paths_tree() -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for parents, _, field, _, _ in MAPPING.targets.values():
        node = tree
        for name in parents:
            node = node.setdefault(name, {})
        node[field] = None
    for name in ("_id", "timestamp", "eventType", "identityMap", "producedBy"):
        tree[name] = None
    tree.setdefault("environment", {})["type"] = None
    # Schema fields the mapping never writes: a record holding one is off its paths.
    tree["web"]["webPageDetails"]["isHomePage"] = None
    tree["web"]["webPageDetails"]["pageViews"] = {"value": None}
    tree["device"]["screenOrientation"] = None
    tree["environment"]["colorDepth"] = None
    tree["placeContext"]["geo"]["_schema"] = {"latitude": None}
    return tree


def _typed_value(path: tuple[str, ...]) -> st.SearchStrategy[Any]:
    """Values of the field's JSON type, which its other constraints may or may not allow."""
    schema_path = ("_tenant", *path[1:]) if path[0] == f"_{TENANT}" else path
    types = {node.get("type") for node in field_schemas(schema_path)}
    if "string" in types:
        return st.sampled_from(["US", "us", "US-CA", "browser", "ab12", "https://a.example/"])
    if "integer" in types or "number" in types:
        return st.one_of(st.integers(-5, 10**6), st.floats(-100, 100))
    if "boolean" in types:
        return st.booleans()
    return json_values


@st.composite
def records(draw: st.DrawFn, tree: dict[str, Any] | None = None, path: tuple[str, ...] = ()) -> Any:
    """Objects whose names mostly follow the mapping's paths, with values mostly of the field's
    type at the leaves; now and then a name off the paths, or any JSON value in any place."""
    tree = _paths_tree() if tree is None else tree
    names = draw(st.lists(st.sampled_from(sorted(tree)), unique=True, max_size=len(tree)))
    record: dict[str, Any] = {}
    if not path and draw(st.integers(0, 9)):
        record["_id"] = "ab12"
        record["timestamp"] = "2026-11-01T10:00:00.123Z"
    for name in names:
        below = tree[name]
        if draw(st.integers(0, 9)) == 0:
            record[name] = draw(json_values)
        elif name == "identityMap":
            record[name] = draw(_identity_maps())
        elif name == f"_{TENANT}" and draw(st.booleans()):
            record[name] = draw(_tenant_objects())
        elif below is None:
            record[name] = draw(_typed_value((*path, name)))
        else:
            record[name] = draw(records(below, (*path, name)))
    if draw(st.integers(0, 7)) == 0:
        record[draw(st.sampled_from(["producedBy", "channel", "commerce", "x"]))] = draw(
            json_values
        )
    return record


def _identity_maps() -> st.SearchStrategy[Any]:
    item = st.fixed_dictionaries(
        {"id": scalars},
        optional={"authenticatedState": scalars, "primary": scalars},
    )
    return st.dictionaries(st.sampled_from(["A", "B"]), st.lists(item, max_size=2))


def _tenant_objects() -> st.SearchStrategy[Any]:
    mixpanel = st.fixed_dictionaries(
        {},
        optional={
            "eventName": scalars,
            "time": scalars,
            "processingTimeMs": scalars,
            "imported": scalars,
            "properties": st.dictionaries(st.text(max_size=4), scalars, max_size=3),
        },
    )
    return st.fixed_dictionaries({"mixpanel": mixpanel})


def _whole_schema_verdict(record: Any) -> bool:
    try:
        FULL(record)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_the_fast_validator_agrees_with_the_whole_schema(record: dict[str, Any]) -> None:
    ours, theirs = copy.deepcopy(record), copy.deepcopy(record)
    verdict = MAPPING.is_valid(ours)
    assert verdict == _whole_schema_verdict(theirs)
    if verdict:
        assert ours == theirs  # the same defaults written (producedBy)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_the_one_pass_acceptor_never_accepts_what_aep_would_reject(record: dict[str, Any]) -> None:
    ours, theirs = copy.deepcopy(record), copy.deepcopy(record)
    accepted = ACCEPTS(ours)
    good = not empty_value_paths(theirs) and _whole_schema_verdict(theirs)
    assert not accepted or good
    if accepted:
        assert ours == theirs  # the same defaults written (producedBy)
    if good and MAPPING.record_paths >= _leaf_paths(record):
        assert accepted, "a good record on the mapping's paths takes the one pass"


def _leaf_paths(record: dict[str, Any], parents: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """The fields of ``record`` as the mapping names them (its tenant object and identityMap
    whole)."""
    paths: set[tuple[str, ...]] = set()
    for name, value in record.items():
        path = (*parents, name)
        if isinstance(value, dict) and path not in MAPPING.record_paths:
            paths |= _leaf_paths(value, path) or {path}
        else:
            paths.add(path)
    return paths


def test_a_mapped_record_takes_the_generated_check_and_gets_the_schema_default() -> None:
    record = {
        "_id": "ab12",
        "timestamp": "2026-11-01T10:00:00.123Z",
        "eventType": "commerce.purchases",
        "identityMap": {"X": [{"id": "u1", "authenticatedState": "ambiguous", "primary": True}]},
        "device": {"screenHeight": 800},
        "placeContext": {"geo": {"countryCode": "US"}},
        f"_{TENANT}": {"mixpanel": {"eventName": "Purchase", "time": 1.5}},
    }
    assert MAPPING.is_valid(record)
    assert record["producedBy"] == "self"
    assert not MAPPING.is_valid({**record, "device": {"screenHeight": 800.5}})
    assert not MAPPING.is_valid({**record, "placeContext": {"geo": {"countryCode": "us"}}})
    assert not MAPPING.is_valid({**record, "timestamp": "yesterday"})
    # Off the mapping's paths: judged by the whole schema.
    assert not MAPPING.is_valid({**record, "device": {"screenOrientation": "sideways"}})
    assert MAPPING.is_valid({**record, "device": {"screenOrientation": "portrait"}})
    assert MAPPING.is_valid({**record, "channel": {"anything": ["goes"]}})  # open content


def test_without_paths_the_whole_schema_judges() -> None:
    validate = record_validator(TENANT)
    assert validate({"_id": "a", "timestamp": "2026-11-01T10:00:00Z", "x": {}})
    assert not validate({"_id": "a"})
