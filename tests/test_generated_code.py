"""Each generated function of ``xdm/generated_code.py`` gives what its plain twin gives."""

import ast
import copy
import itertools
from datetime import date
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixpanel_assets.sandbox.synthetic_events import synthetic_day
from mixpanel_assets.xdm.generated_code import (
    interpreted_check,
    layout_writer,
    write_properties,
    written_check,
)
from mixpanel_assets.xdm.mapping import (
    InvalidEvent,
    MappingSpec,
    _property_text,
    parse_event,
    to_xdm,
)
from mixpanel_assets.xdm.schema import _FORMATS, cut_record_schema_and_shape
from tests.test_record_validator import json_values, records

PACKAGE = Path(__file__).resolve().parents[1] / "mixpanel_assets"
TENANT = "acme"
MAPPING = MappingSpec(project_id="1", tenant_id=TENANT).compiled
CUT, SHAPE = cut_record_schema_and_shape(TENANT, MAPPING.custom_tenant_fields, MAPPING.record_paths)
CHECKS = {
    reject: (
        written_check(CUT, SHAPE, _FORMATS, reject_empty_values=reject),
        interpreted_check(CUT, SHAPE, _FORMATS, reject_empty_values=reject),
    )
    for reject in (False, True)
}


def _verdicts(checks: tuple[Any, Any], record: Any) -> tuple[Any, Any]:
    """Each check's verdict and the record it leaves (defaults written), key order included."""
    outcomes = []
    for check in checks:
        mine = copy.deepcopy(record)
        outcomes.append((check(mine), repr(mine)))  # key order included
    return outcomes[0], outcomes[1]


def test_exec_is_called_in_generated_code_only() -> None:
    callers = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("exec", "eval", "compile")
    )
    assert callers == ["xdm/generated_code.py", "xdm/generated_code.py"]
    texts = {p.name for p in PACKAGE.rglob("*.py") if "exec(" in p.read_text()}
    assert texts == {"generated_code.py"}


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records(), st.booleans())
def test_the_written_record_check_answers_as_the_interpreted_one(
    record: dict[str, Any], reject_empty_values: bool
) -> None:
    written, interpreted = _verdicts(CHECKS[reject_empty_values], record)
    assert written == interpreted


def _mapped_records(days: int = 3, events_per_day: int = 400) -> list[dict[str, Any]]:
    spec = MappingSpec(project_id="1", tenant_id=TENANT)
    found = []
    for offset in range(days):
        for line in synthetic_day("1", date(2026, 11, 1 + offset), events_per_day=events_per_day):
            try:
                found.append(to_xdm(*parse_event(line), spec))
            except InvalidEvent:
                continue
    return found


def test_on_a_sandbox_days_records_both_checks_answer_alike_and_mostly_true() -> None:
    records_ = _mapped_records()
    assert len(records_) > 1000
    for reject in (False, True):
        outcomes = [_verdicts(CHECKS[reject], record) for record in records_]
        assert [written for written, _ in outcomes] == [plain for _, plain in outcomes]
        assert sum(written[0] is True for written, _ in outcomes) > 0.9 * len(records_)
    # and with a field taken away, emptied or added off the paths: False and None come too
    broken = []
    for index, record in enumerate(records_):
        changed = copy.deepcopy(record)
        name = ("_id", "web", "timestamp", "device")[index % 4]
        if index % 3 == 0:
            changed["offThePaths"] = 1
        elif index % 3 == 1:
            changed[name] = ""
        else:
            changed.pop(name, None)
        broken.append(changed)
    verdicts = set()
    for reject in (False, True):
        for record in broken:
            written, plain = _verdicts(CHECKS[reject], record)
            assert written == plain
            verdicts.add(written[0])
    assert verdicts == {True, False, None}


# Small schemas of every kind the writer inlines or hands over, with values to judge.
_leaves = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["string", "boolean", "number", "null"])}),
    st.fixed_dictionaries({"type": st.just("integer")}),
    st.fixed_dictionaries(
        {"type": st.just("string")},
        optional={
            "enum": st.lists(st.sampled_from(["a", "b", "", "US"]), min_size=1, unique=True),
            "pattern": st.sampled_from(["^a", "b$", "^[A-Z]{2}$", "\\$"]),
            "format": st.sampled_from(sorted(_FORMATS)),
        },
    ),
    st.fixed_dictionaries({"type": st.just("integer"), "minimum": st.integers(-2, 2)}),
    st.fixed_dictionaries({"maxLength": st.integers(0, 3)}),
)
_defaults = st.one_of(st.none(), st.integers(-3, 3), st.sampled_from(["x", ""]), st.just([]))


def _with_default(pair: tuple[dict[str, Any], Any]) -> dict[str, Any]:
    schema, default = pair
    return schema if default is None else {**schema, "default": default}


def _consistent(schema: dict[str, Any]) -> dict[str, Any]:
    """An object schema fastjsonschema accepts: nothing required that it forbids."""
    if schema.get("additionalProperties") is False and "required" in schema:
        allowed = schema.get("properties", {})
        return {**schema, "required": [name for name in schema["required"] if name in allowed]}
    return schema


_schemas = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.fixed_dictionaries(
            {"type": st.just("object")},
            optional={
                "properties": st.dictionaries(
                    st.sampled_from("abc"), st.tuples(inner, _defaults).map(_with_default)
                ),
                "required": st.lists(st.sampled_from("abc"), unique=True, max_size=2),
                "additionalProperties": st.just(False) | inner,
            },
        ).map(_consistent),
        st.fixed_dictionaries({"type": st.just("array")}, optional={"items": inner}),
        st.fixed_dictionaries({"anyOf": st.lists(inner, min_size=1, max_size=2)}),
    ),
    max_leaves=8,
)
_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-3, 3),
        st.floats(-3, 3),
        st.sampled_from(
            ["", "a", "ab", "ab\n", "US", "US\n", "b$", "2026-11-01T10:00:00Z", "https://a.b/c d"]
        ),
    ),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("abcx"), inner, max_size=4)
    ),
    max_leaves=10,
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_schemas, st.lists(_values | json_values, min_size=1, max_size=5), st.booleans())
def test_written_and_interpreted_checks_agree_on_any_small_schema(
    schema: dict[str, Any], values: list[Any], reject_empty_values: bool
) -> None:
    checks = (
        written_check(schema, None, _FORMATS, reject_empty_values=reject_empty_values),
        interpreted_check(schema, None, _FORMATS, reject_empty_values=reject_empty_values),
    )
    for value in values:
        written, interpreted = _verdicts(checks, value)
        assert written == interpreted
        assert written[0] in (True, False)  # without a shape, never None


def test_layout_writers_write_what_the_loop_writes_on_a_sandbox_day() -> None:
    targets, parents = MAPPING.targets, MAPPING.parent_paths
    events = [
        parse_event(line)[1]
        for offset in range(3)
        for line in synthetic_day("1", date(2026, 11, 1 + offset), events_per_day=400)
    ]
    layouts: dict[tuple[str, ...], Any] = {}
    for properties in events:
        layout = tuple(properties)
        if layout not in layouts:
            layouts[layout] = layout_writer(layout, targets, _property_text)
        outcomes = []
        for write in (
            layouts[layout],
            lambda props, record: write_properties(props, record, targets, parents, _property_text),
        ):
            record: dict[str, Any] = {"_id": "x", f"_{TENANT}": {"mixpanel": {"eventName": "e"}}}
            try:
                custom = write(properties, record)
            except InvalidEvent as problem:
                outcomes.append(f"InvalidEvent: {problem}")
                continue
            outcomes.append((orjson.dumps(record), orjson.dumps(custom)))
        assert outcomes[0] == outcomes[1]
    assert len(events) == 1200
    assert len(layouts) > 5


_EDGE_SCHEMAS = [
    {"type": "string", "pattern": "b$"},
    {"type": "string", "pattern": "^[A-Z]{2}$", "enum": ["US", "GB\n"]},
    {"type": "string", "format": "date-time"},
    {"type": "string", "format": "uri"},
    {"type": "integer"},
    {"type": "number"},
    {"type": "boolean"},
    {"type": "array", "items": {"type": "integer"}},
    {
        "type": "object",
        "properties": {"a": {"type": "string", "default": "x"}, "b": {"type": "integer"}},
        "required": ["b"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"a": {"type": "array"}},
        "additionalProperties": {"type": "null"},
    },
    {"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}, {"minimum": 1}]}}},
]
_EDGE_VALUES = [
    None, True, False, 0, 1, 1.0, 1.5, -1, 2**70, "", "ab", "ab\n", "US", "GB\n", "b",
    "2026-11-01T10:00:00Z", "2026-11-01T10:00:00", "https://a.b/c", "no scheme", [], [1, 2.0],
    [1, True], {}, {"b": 1}, {"a": "", "b": 1}, {"b": 1, "c": None}, {"a": [], "c": None},
    {"a": 2}, {"a": 0}, {"a": "s", "x": {}},
]  # fmt: skip


def test_written_and_interpreted_checks_agree_on_edge_cases() -> None:
    verdicts = set()
    for schema, reject in itertools.product(_EDGE_SCHEMAS, (False, True)):
        checks = (
            written_check(schema, None, _FORMATS, reject_empty_values=reject),
            interpreted_check(schema, None, _FORMATS, reject_empty_values=reject),
        )
        for value in _EDGE_VALUES:
            written, interpreted = _verdicts(checks, value)
            assert written == interpreted, (schema, value, reject)
            verdicts.add(written[0])
    assert verdicts == {True, False}
