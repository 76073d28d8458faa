"""Validity by construction: the spec's proof, the records it lets through unchecked, the sample
validated in full at run time, and the loud failure when the proof is wrong."""

import copy
import dataclasses
import gzip
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from mixpanel_assets.xdm.conversions import as_string
from mixpanel_assets.xdm.day_mapping import map_day
from mixpanel_assets.xdm.line_mapping import MappedEvent, map_line
from mixpanel_assets.xdm.mapping import MappingSpec, _property_text
from mixpanel_assets.xdm.property_writers import PropertyWriters
from mixpanel_assets.xdm.schema import _compiled_validator, xdm_validator
from mixpanel_assets.xdm.validity import (
    SAMPLE_ONE_IN,
    Arr,
    Leaf,
    Map,
    Obj,
    Proof,
    ProofFailed,
    prove,
    sampled,
)
from tests.test_mapping_properties import export_lines

TENANT = "acme"
NOW = int(time.time())


def _spec() -> MappingSpec:
    return MappingSpec(project_id="2384945", tenant_id=TENANT)


def _with_proof(proof: Proof | None) -> MappingSpec:
    """A spec whose compiled mapping carries ``proof`` in place of the one it proved."""
    spec = _spec()
    spec.__dict__["compiled"] = dataclasses.replace(spec.compiled, proof=proof)
    return spec


def test_the_default_mapping_is_proven_and_writes_the_schemas_default_itself() -> None:
    mapping = _spec().compiled
    assert mapping.proof_problems == ()
    assert mapping.proof == Proof(defaults=(((), "producedBy", "self"),))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(export_lines())
def test_records_let_through_unchecked_are_what_the_full_validators_accept(line: bytes) -> None:
    outcome = map_line(line, _spec())
    if not isinstance(outcome, MappedEvent):
        return
    record = outcome.record
    assert list(xdm_validator(TENANT).iter_errors(record)) == []
    validated = copy.deepcopy(record)
    _compiled_validator(TENANT)(validated)  # writes any default the mapping left out
    assert validated == record


def _object(fields: dict, always: frozenset = frozenset()) -> Obj:
    return Obj(fields, always)


def test_the_proof_names_what_it_cannot_show() -> None:
    schema = {
        "type": "object",
        "required": ["id", "kind"],
        "properties": {
            "id": {"type": "string", "format": "uri-reference"},
            "kind": {"type": "string", "enum": ["a", "b"]},
            "size": {"type": "integer"},
            "code": {"type": "string", "pattern": "^[A-Z]{2}$"},
            "name": {"type": "string", "not": {"const": "x"}},
            "tags": {"type": "array", "items": {"type": "string"}},
            "extra": {"type": "object", "additionalProperties": {"type": "string"}},
            "by": {"type": "string", "default": "self"},
        },
    }
    good = _object(
        {
            "id": Leaf("string", form="sha256-hex"),
            "kind": Leaf("string", values=frozenset({"a", "b"})),
            "size": Leaf("integer"),
            "code": Leaf("string", checked=True),
            "tags": Arr(Leaf("string")),
            "extra": Map(Leaf("string")),
        },
        frozenset({"id", "kind"}),
    )
    assert prove(schema, good) == (Proof((((), "by", "self"),)), [])
    bad = _object(
        {
            "id": Leaf("string", form="rfc3339-ms"),  # the wrong form for a URI reference
            "kind": Leaf("string", values=frozenset({"a", "c"})),
            "size": Leaf("number"),
            "code": Leaf("string"),  # not checked per value
            "name": Leaf("string", checked=True),  # not: a keyword the proof does not know
            "tags": Arr(Leaf("boolean")),
            "extra": Map(Leaf("integer")),
        },
        frozenset({"id"}),
    )
    proof, problems = prove(schema, bad)
    assert proof is None
    assert problems == [
        "id: [('format', 'uri-reference')] are not proven for its values",
        "kind: the values ['c'] break [('enum', \"['a', 'b']\")]",
        "size: the mapping writes number, schema wants integer",
        "code: [('pattern', '^[A-Z]{2}$')] are not proven for its values",
        "name: keywords ['not'] are not proven",
        "tags.[]: the mapping writes boolean, schema wants string",
        "extra.*: the mapping writes integer, schema wants string",
        "(record): ['kind'] are required but not always written",
    ]


def test_a_default_below_the_record_or_an_unknown_keyword_defeats_the_proof() -> None:
    inner = {"type": "object", "properties": {"by": {"type": "string", "default": "x"}}}
    assert prove({"type": "object", "properties": {"o": inner}}, _object({"o": _object({})}))[
        1
    ] == ["o: the default of 'by' is not written"]
    assert prove({"type": "object", "minProperties": 1}, _object({}))[1] == [
        "(record): an object, but the schema has ['minProperties']"
    ]


def _raw_day(path: Path, events: int) -> Path:
    with gzip.open(path, "wb") as raw:
        for index in range(events):
            properties = {
                "time": NOW - 86400 + index + (0.25 if index % 7 == 0 else 0),
                "distinct_id": f"u{index % 97}",
                "$insert_id": f"i{index}",
                "mp_country_code": "us",
            }
            raw.write(orjson.dumps({"event": "Purchase", "properties": properties}) + b"\n")
    return path


def _ids(events_file: Path) -> list[str]:
    with gzip.open(events_file, "rb") as lines:
        return [orjson.loads(line)["_id"] for line in lines]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_deterministic_sample_is_validated_in_full_and_counted(
    tmp_path: Path, workers: int
) -> None:
    raw = _raw_day(tmp_path / "raw.jsonl.gz", 5000)
    stats = map_day(raw, tmp_path / "e.gz", tmp_path / "q.gz", _spec(), tmp_path, workers=workers)
    ids = _ids(tmp_path / "e.gz")
    in_sample = sum(sampled(identifier) for identifier in ids)
    assert stats.records == 5000
    assert stats.records_validated_in_full == in_sample
    assert 5000 / SAMPLE_ONE_IN / 3 < in_sample < 5000 / SAMPLE_ONE_IN * 3
    assert sampled("003f") and not sampled("0040")


def test_without_a_proof_every_record_is_validated_and_the_invalid_quarantined() -> None:
    line = orjson.dumps(
        {
            "event": "Purchase",
            "properties": {"time": NOW - 60, "distinct_id": "u1", "mp_country_code": "usa"},
        }
    )
    outcome = map_line(line, _with_proof(None))
    assert isinstance(outcome, MappedEvent) and outcome.validated_in_full
    assert outcome.record["producedBy"] == "self"  # written by the per-record check
    # A mapping that writes what the schema refuses (a country code left unchecked): without a
    # proof, its record is quarantined with the schema's reasons.
    spec = _with_proof(None)
    mapping = spec.compiled
    targets = dict(mapping.targets)
    parents, number, field, _, _ = targets["mp_country_code"]
    targets["mp_country_code"] = (parents, number, field, as_string, None)
    writers = PropertyWriters(targets, mapping.parent_paths, _property_text)
    spec.__dict__["compiled"] = dataclasses.replace(mapping, targets=targets, writers=writers)
    reasons = map_line(line, spec)
    assert isinstance(reasons, list)
    assert any(reason.startswith("schema: placeContext/geo/countryCode") for reason in reasons)


def test_a_record_that_breaks_the_proof_fails_the_day_loudly(tmp_path: Path) -> None:
    raw = _raw_day(tmp_path / "raw.jsonl.gz", 5000)
    wrong = _with_proof(Proof(defaults=()))  # forgets producedBy: the full validator adds it
    with pytest.raises(ProofFailed, match="added defaults the mapping did not write"):
        map_day(raw, tmp_path / "e.gz", tmp_path / "q.gz", wrong, tmp_path, workers=1)
