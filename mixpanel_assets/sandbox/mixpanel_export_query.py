"""The export's query parameters, checked as Mixpanel checks them, and the filters they ask for."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson

from mixpanel_assets.sandbox.mixpanel_http import ApiError

MAX_LIMIT = 100_000
_UNSUPPORTED_WHERE = (
    'the local emulator supports only where expressions properties["mp_processing_time_ms"] <op> N'
    ' and number(properties["mp_processing_time_ms"]) <op> N, with <op> one of > >= < <= ==,'
    " (each possibly in parentheses) joined by ' and '"
)
_WHERE_CLAUSE = re.compile(
    r'\s*(?P<number>number\(\s*)?properties\["mp_processing_time_ms"\](?(number)\s*\))'
    r"\s*(?P<op>>=|<=|==|>|<)\s*(?P<value>-?\d+(?:\.\d+)?)\s*"
)
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class ExportQuery:
    """The validated query parameters of one export request."""

    from_date: date
    to_date: date
    events: frozenset[str] | None
    where: Callable[[dict[str, Any]], bool] | None
    limit: int | None
    time_in_ms: bool

    @property
    def transforms(self) -> bool:
        """Whether lines must be parsed: a filter drops some, or ``time`` is converted."""
        return self.events is not None or self.where is not None or self.time_in_ms


def parse_export_query(query: dict[str, str], today: date) -> ExportQuery:
    """The query's parameters, or an ``ApiError`` worded as Mixpanel's 400s are."""
    from_date = _parse_date(query, "from_date")
    to_date = _parse_date(query, "to_date")
    if to_date > today:
        raise ApiError(400, "to_date cannot be later than today")
    if from_date > to_date:
        raise ApiError(400, "from_date cannot be later than to_date")
    return ExportQuery(
        from_date=from_date,
        to_date=to_date,
        events=_parse_events(query.get("event")),
        where=_parse_where(query.get("where")),
        limit=_parse_limit(query.get("limit")),
        time_in_ms=_parse_bool(query, "time_in_ms"),
    )


def filter_line(line: bytes, export: ExportQuery) -> bytes | None:
    """The line as this export returns it, or None when a filter drops it."""
    event = orjson.loads(line)
    if export.events is not None and event.get("event") not in export.events:
        return None
    properties = event.get("properties") or {}
    if export.where is not None and not export.where(properties):
        return None
    if not export.time_in_ms:
        return line
    seconds = properties.get("time")
    if isinstance(seconds, int | float) and not isinstance(seconds, bool):
        properties["time"] = round(seconds * 1000)
    return orjson.dumps(event)


def _parse_date(query: dict[str, str], name: str) -> date:
    value = query.get(name)
    if not value:
        raise ApiError(400, f"{name} is required")
    try:
        if not _DATE.fullmatch(value):
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise ApiError(400, f"{name} must be a date formatted YYYY-MM-DD, got {value!r}") from None


def _parse_events(value: str | None) -> frozenset[str] | None:
    if not value:
        return None
    try:
        names = orjson.loads(value)
    except orjson.JSONDecodeError:
        names = None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ApiError(400, f"event must be a non-empty JSON array of event names, got {value!r}")
    return frozenset(names)


def _parse_where(value: str | None) -> Callable[[dict[str, Any]], bool] | None:
    """The ``mp_processing_time_ms`` comparisons the late-data watermark needs, and no more."""
    if not value:
        return None
    clauses = []
    for text in value.split(" and "):
        match = _WHERE_CLAUSE.fullmatch(_without_parentheses(text))
        if match is None:
            raise ApiError(400, f"unsupported where expression {value!r}: {_UNSUPPORTED_WHERE}")
        clauses.append((_OPERATORS[match["op"]], float(match["value"])))

    def matches(properties: dict[str, Any]) -> bool:
        processed = properties.get("mp_processing_time_ms")
        if not isinstance(processed, int | float) or isinstance(processed, bool):
            return False
        return all(compare(processed, bound) for compare, bound in clauses)

    return matches


def _without_parentheses(clause: str) -> str:
    clause = clause.strip()
    while clause.startswith("(") and clause.endswith(")"):
        clause = clause[1:-1].strip()
    return clause


def _parse_limit(value: str | None) -> int | None:
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ApiError(400, f"limit must be a positive integer, got {value!r}")
    if int(value) > MAX_LIMIT:
        raise ApiError(400, f"limit cannot be over {MAX_LIMIT}")
    return int(value)


def _parse_bool(query: dict[str, str], name: str) -> bool:
    value = query.get(name, "").lower()
    if value not in ("", "true", "false"):
        raise ApiError(400, f"{name} must be true or false, got {query[name]!r}")
    return value == "true"
