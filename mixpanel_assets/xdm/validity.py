"""Validity by construction: a proof, made when a spec compiles, that every record fits the schema.

Design notes: docs/design-notes.md, `xdm/validity.py`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mixpanel_assets.xdm.schema import node_check

# Keywords that constrain a scalar beyond its JSON type (as schema.py's _VALUE_CONSTRAINTS).
_VALUE_KEYWORDS = frozenset(
    {"pattern", "enum", "const", "format", "minimum", "maximum", "exclusiveMinimum"}
    | {"exclusiveMaximum", "minLength", "maxLength", "multipleOf"}
)
_IGNORED = frozenset({"default"})  # a field's default is its parent's to write
_OBJECT_KEYWORDS = frozenset({"type", "properties", "required", "additionalProperties"})
# JSON types a field may declare for each type a value of the mapping has.
_FITTING_TYPES = {
    "string": frozenset({"string"}),
    "integer": frozenset({"integer", "number"}),
    "number": frozenset({"number"}),
    "boolean": frozenset({"boolean"}),
}
# The constraints each form of value satisfies by how it is made (mapping.py):
# ``sha256-hex`` is 64 characters of 0-9a-f, all unreserved in RFC 3986, so a URI reference
# (a relative path); ``rfc3339-ms`` is ``YYYY-MM-DDTHH:MM:SS.mmmZ`` from a valid date and time.
FORMS: dict[str, frozenset[tuple[str, str]]] = {
    "sha256-hex": frozenset({("format", "uri-reference")}),
    "rfc3339-ms": frozenset({("format", "date-time")}),
}
# One record in this many (by ``_id``) is validated in full even when the proof holds.
SAMPLE_ONE_IN = 1024
_SAMPLE_BELOW = f"{4096 // SAMPLE_ONE_IN:03x}"  # _id prefixes 000..003 of 4096


class ProofFailed(RuntimeError):
    """A record the proof held valid failed the full validation: a bug, so the day fails."""


@dataclass(frozen=True)
class Leaf:
    """A scalar the mapping writes: its JSON type, and how its value constraints are met."""

    json_type: str
    values: frozenset[Any] | None = None  # every value it can take, when finitely many
    form: str = ""  # a key of FORMS
    checked: bool = False  # the field's value check runs on each value before it is written


@dataclass(frozen=True)
class Obj:
    """An object with known field names; ``always`` are written whenever the object is."""

    fields: dict[str, Fact]
    always: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Arr:
    """An array whose every item is one ``Fact``."""

    item: Fact


@dataclass(frozen=True)
class Map:
    """An object with names of any kind (the tenant's properties), every value one ``Fact``."""

    value: Fact


Fact = Leaf | Obj | Arr | Map


@dataclass(frozen=True)
class Proof:
    """What the proof needs the mapping to add: the schema's defaults, by parent path."""

    defaults: tuple[tuple[tuple[str, ...], str, Any], ...] = ()


@dataclass
class _Walk:
    problems: list[str] = field(default_factory=list)
    defaults: list[tuple[tuple[str, ...], str, Any]] = field(default_factory=list)


def prove(schema: dict[str, Any], record: Obj) -> tuple[Proof | None, list[str]]:
    """(the proof, []) when every record shaped as ``record`` fits ``schema``; else (None, why).

    ``schema`` is a cut schema (references inlined, see ``schema.cut_record_schema``); the
    problems say what could not be shown.
    """
    walk = _Walk()
    _object(schema, record, (), walk, defaults_allowed=True)
    if walk.problems:
        return None, walk.problems
    return Proof(tuple(walk.defaults)), []


def sampled(event_id: str) -> bool:
    """Whether a record is in the deterministic sample validated in full (1 in SAMPLE_ONE_IN)."""
    return event_id < _SAMPLE_BELOW


def _where(path: tuple[str, ...]) -> str:
    return ".".join(path) or "(record)"


def _fact(schema: Any, fact: Fact, path: tuple[str, ...], walk: _Walk) -> None:
    if schema is True or schema == {}:
        return  # anything goes
    if not isinstance(schema, dict):
        walk.problems.append(f"{_where(path)}: schema {schema!r} admits nothing")
    elif isinstance(fact, Leaf):
        _leaf(schema, fact, path, walk)
    elif isinstance(fact, Obj):
        _object(schema, fact, path, walk, defaults_allowed=False)
    elif isinstance(fact, Arr):
        if schema.keys() - _IGNORED > {"type", "items"} or schema.get("type") != "array":
            walk.problems.append(f"{_where(path)}: an array, but the schema says {schema}")
            return
        _fact(schema.get("items", {}), fact.item, (*path, "[]"), walk)
    else:
        unknown = schema.keys() - _IGNORED - {"type", "additionalProperties"}
        if unknown or schema.get("type") != "object":
            walk.problems.append(f"{_where(path)}: an object of any names, schema says {schema}")
            return
        _fact(schema.get("additionalProperties", {}), fact.value, (*path, "*"), walk)


def _leaf(schema: dict[str, Any], fact: Leaf, path: tuple[str, ...], walk: _Walk) -> None:
    where = _where(path)
    unknown = schema.keys() - _IGNORED - _VALUE_KEYWORDS - {"type"}
    if unknown:
        walk.problems.append(f"{where}: keywords {sorted(unknown)} are not proven")
        return
    types = schema.get("type")
    declared = {types} if isinstance(types, str) else set(types or ())
    if declared and not declared & _FITTING_TYPES[fact.json_type]:
        walk.problems.append(f"{where}: the mapping writes {fact.json_type}, schema wants {types}")
        return
    constraints = {(key, str(value)) for key, value in schema.items() if key in _VALUE_KEYWORDS}
    if not constraints or fact.checked:
        return
    if fact.values is not None:
        check = node_check({key: value for key, value in schema.items() if key not in _IGNORED})
        wrong = sorted(str(value) for value in fact.values if not check(value))
        if wrong:
            walk.problems.append(f"{where}: the values {wrong} break {sorted(constraints)}")
        return
    unmet = constraints - FORMS.get(fact.form, frozenset())
    if unmet:
        walk.problems.append(f"{where}: {sorted(unmet)} are not proven for its values")


def _object(
    schema: dict[str, Any],
    fact: Obj,
    path: tuple[str, ...],
    walk: _Walk,
    *,
    defaults_allowed: bool,
) -> None:
    where = _where(path)
    unknown = schema.keys() - _IGNORED - _OBJECT_KEYWORDS
    if unknown or schema.get("type", "object") != "object":
        walk.problems.append(f"{where}: an object, but the schema has {sorted(unknown)}")
        return
    properties: dict[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties", {})
    for name, child in fact.fields.items():
        if name in properties:
            _fact(properties[name], child, (*path, name), walk)
        elif extra is False:
            walk.problems.append(f"{where}: the schema admits no field {name!r}")
        else:
            _fact(extra, child, (*path, name), walk)
    defaults = {
        name: child["default"]
        for name, child in properties.items()
        if isinstance(child, dict) and "default" in child and name not in fact.always
    }
    for name, value in defaults.items():
        if not defaults_allowed or not isinstance(value, str | int | float | bool):
            walk.problems.append(f"{where}: the default of {name!r} is not written")
            continue
        _leaf(properties[name], Leaf(_json_type(value), values=frozenset({value})), path, walk)
        walk.defaults.append((path, name, value))
    missing = set(schema.get("required", ())) - fact.always - defaults.keys()
    if missing:
        walk.problems.append(f"{where}: {sorted(missing)} are required but not always written")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return "number" if isinstance(value, float) else "string"


def apply_defaults(record: dict[str, Any], proof: Proof) -> None:
    """Write the schema's defaults into ``record`` where the schema's validators would."""
    for path, name, value in proof.defaults:
        node: Any = record
        for parent in path:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict) and name not in node:
            node[name] = value


def record_fact(
    facts: Iterable[tuple[tuple[str, ...], Fact]], always: dict[tuple[str, ...], frozenset[str]]
) -> Obj:
    """The ``Obj`` of a record from (path, fact) pairs.

    ``always`` names, by path (the record's at ``()``), the fields always written in the object
    there; objects it does not name have none.
    """
    root: dict[str, Any] = {}
    for path, fact in facts:
        node = root
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = fact
    return _as_obj(root, (), always)


def _as_obj(
    tree: dict[str, Any], path: tuple[str, ...], always: dict[tuple[str, ...], frozenset[str]]
) -> Obj:
    fields = {
        name: _as_obj(child, (*path, name), always) if isinstance(child, dict) else child
        for name, child in tree.items()
    }
    return Obj(fields, always.get(path, frozenset()))
