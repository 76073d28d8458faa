"""How the local platform judges one record: by the dataset's schema as the registry composes it.

Design notes: docs/design-notes.md, `sandbox/record_checks.py`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import jsonschema_rs
import orjson
from jsonschema import Draft6Validator, FormatChecker

# (row code, path like ``a/b/0`` or ``(record)``, message)
Problem = tuple[str, str, str]
EMPTY_VALUE = "null or empty value: AEP wants the field left out"
IN_THE_FUTURE = "in the future: an event must occur in the past"

# RFC 3339 section 5.6 date-time, as AEP requires for XDM date-time fields.
_DATE_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
# RFC 3986: a URI has a scheme; a URI reference is any string of URI characters.
_URI_CHARACTERS = r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*"
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:" + _URI_CHARACTERS)
_URI_REFERENCE = re.compile(_URI_CHARACTERS)
# What no field may hold, at any depth, declared by the schema or not.
_NON_EMPTY = {
    "not": {"enum": [None, "", [], {}]},
    "additionalProperties": {"$ref": "#/definitions/nonEmpty"},
    "items": {"$ref": "#/definitions/nonEmpty"},
}
_NON_EMPTY_REF = {"$ref": "#/definitions/nonEmpty"}
_compiled: dict[str, jsonschema_rs.Draft6Validator] = {}


def _date_time(value: str) -> bool:
    if not _DATE_TIME.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value.upper())
    except ValueError:
        return False
    return True


def _date(value: str) -> bool:
    if not _DATE.fullmatch(value):
        return False
    try:
        datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        return False
    return True


_FORMATS: dict[str, Callable[[str], bool]] = {
    "date-time": _date_time,
    "date": _date,
    "uri": lambda value: bool(_URI.fullmatch(value)),
    "url": lambda value: bool(_URI.fullmatch(value)),
    "uri-reference": lambda value: bool(_URI_REFERENCE.fullmatch(value)),
}
_format_checker = FormatChecker(formats=())
for _name, _check in _FORMATS.items():
    _format_checker.checks(_name)(
        lambda value, check=_check: not isinstance(value, str) or check(value)
    )


def record_schema(composed: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema a record of a dataset must meet, from its schema's composed form."""
    return {
        "type": "object",
        "properties": composed.get("properties", {}),
        "required": composed.get("required", []),
    }


class RecordJudge:
    """Judges records against one record schema (see ``record_schema``)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self._schema = schema
        key = hashlib.sha256(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)).hexdigest()
        if key not in _compiled:  # compiling the composed schema takes a while: once a process
            strict = {**_without_empty_values(schema), "definitions": {"nonEmpty": _NON_EMPTY}}
            _compiled[key] = jsonschema_rs.Draft6Validator(
                strict, formats=_FORMATS, validate_formats=True
            )
        self._accepts = _compiled[key]
        self._details: Draft6Validator | None = None

    def problems(self, record: dict[str, Any], now: datetime) -> list[Problem]:
        """Everything AEP would reject ``record`` for; [] when it is fine.

        One compiled check covers the schema and the empty values; only a record it refuses is
        examined again, to name each problem.
        """
        problems: list[Problem] = []
        if not self._accepts.is_valid(record):
            problems += [("1555", path, EMPTY_VALUE) for path in empty_value_paths(record)]
            problems += self._schema_problems(record)
            if not problems:  # the two validators disagree: keep the compiled one's word
                first = next(self._accepts.iter_errors(record))
                path = "/".join(map(str, first.instance_path)) or "(record)"
                problems.append(("1550", path, first.message))
        timestamp = record.get("timestamp")
        if isinstance(timestamp, str) and _in_the_future(timestamp, now):
            problems.append(("1550", "timestamp", IN_THE_FUTURE))
        return problems

    def _schema_problems(self, record: dict[str, Any]) -> list[Problem]:
        """Every way ``record`` breaks the schema, by path (jsonschema lists them all)."""
        if self._details is None:
            self._details = Draft6Validator(self._schema, format_checker=_format_checker)
        problems = []
        for error in self._details.iter_errors(record):
            path = "/".join(map(str, error.absolute_path)) or "(record)"
            required = error.validator == "required"
            problems.append(("1555" if required else "1550", path, error.message))
        return problems


def _without_empty_values(node: Any) -> Any:
    """``node`` (a schema) refusing nulls and empty values in every field, declared or not."""
    if not isinstance(node, dict):
        return node
    strict = dict(node)
    if isinstance(node.get("properties"), dict):
        strict["properties"] = {
            name: _without_empty_values(child) for name, child in node["properties"].items()
        }
    if isinstance(node.get("patternProperties"), dict):
        strict["patternProperties"] = {
            pattern: _without_empty_values(child)
            for pattern, child in node["patternProperties"].items()
        }
    for keyword in ("items", "additionalProperties"):
        if isinstance(node.get(keyword), dict):
            strict[keyword] = _without_empty_values(node[keyword])
    kinds = node.get("type")
    kinds = {kinds} if isinstance(kinds, str) else set(kinds or ())
    if not kinds or "null" in kinds:
        strict["not"] = _NON_EMPTY["not"]
    if "string" in kinds:
        strict["minLength"] = max(1, node.get("minLength", 0))
    if "array" in kinds:
        strict["minItems"] = max(1, node.get("minItems", 0))
        strict.setdefault("items", _NON_EMPTY_REF)
    if "object" in kinds:
        strict["minProperties"] = max(1, node.get("minProperties", 0))
        strict.setdefault("additionalProperties", _NON_EMPTY_REF)
    return strict


def empty_value_paths(value: Any, path: str = "") -> list[str]:
    """Paths (``a/b/0``; ``(record)`` for the whole) of the nulls and empty values in ``value``."""
    if value is None or value == "" or value == [] or value == {}:
        return [path or "(record)"]
    found: list[str] = []
    if isinstance(value, dict):
        for key, child in value.items():
            found += empty_value_paths(child, f"{path}/{key}" if path else str(key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += empty_value_paths(child, f"{path}/{index}" if path else str(index))
    return found


def _in_the_future(timestamp: str, now: datetime) -> bool:
    try:
        moment = datetime.fromisoformat(timestamp)
    except ValueError:
        return False  # the schema's date-time format reports a malformed value
    return moment.tzinfo is not None and moment > now
