"""The local platform's compiled judge gives jsonschema's verdict on every record it sees."""

from __future__ import annotations

import copy
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jsonschema import Draft6Validator

from mixpanel_assets.sandbox.platform_emulator import PlatformEmulator
from mixpanel_assets.sandbox.record_checks import (
    _NON_EMPTY,
    RecordJudge,
    _format_checker,
    _without_empty_values,
    record_schema,
)

VALUES: list[Any] = [
    None, "", [], {}, 0, -3, 1.5, 1.0, True, "x", "not a date", "2026-01-01T00:00:00Z",
    "2026-13-01T00:00:00Z", "http://a b", "web.webpagedetails.pageViews", "1.2.3.4", [1], [None],
    {"a": None}, {"a": 1},
]  # fmt: skip


def _record() -> dict[str, Any]:
    return {
        "_id": "0" * 64,
        "timestamp": "2026-11-01T10:00:00.000Z",
        "eventType": "web.webpagedetails.pageViews",
        "producedBy": "self",
        "identityMap": {"MixpanelDistinctId": [{"id": "u1", "primary": True}]},
        "web": {"webPageDetails": {"URL": "https://example.com/a", "name": "A"}},
        "environment": {"type": "browser", "browserDetails": {"name": "Chrome"}},
        "application": {"name": "Shop", "version": "1.2"},
        "_localsandbox": {"mixpanel": {"eventName": "x", "distinctId": "u1"}},
    }


def _paths(node: Any, path: tuple = ()) -> list[tuple]:
    found = [path] if path else []
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else []
    )
    for key, child in items:
        found += _paths(child, (*path, key))
    return found


def test_the_compiled_judge_agrees_with_jsonschema_on_mutated_records(tmp_path: Path) -> None:
    with PlatformEmulator(tmp_path / "aep") as emulator:
        dataset = emulator._datasets[emulator.create_dataset("events")]
        schema = record_schema(emulator._resolved(emulator._registry[dataset.schema_id]))
    judge = RecordJudge(schema)
    strict = {**_without_empty_values(schema), "definitions": {"nonEmpty": _NON_EMPTY}}
    reference = Draft6Validator(strict, format_checker=_format_checker)
    now = datetime.now(UTC)
    base = _record()
    assert judge.problems(base, now) == [] and reference.is_valid(base)
    rng = random.Random(20)
    verdicts = set()
    for _ in range(3000):
        record = copy.deepcopy(base)
        path = rng.choice(_paths(record))
        parent = record
        for key in path[:-1]:
            parent = parent[key]
        if rng.random() < 0.8:
            parent[path[-1]] = copy.deepcopy(rng.choice(VALUES))
        elif isinstance(parent, dict):
            parent[f"extra{rng.randint(0, 2)}"] = copy.deepcopy(rng.choice(VALUES))
        valid = reference.is_valid(record)
        verdicts.add(valid)
        assert (judge.problems(record, now) == []) == valid, (path, record)
    assert verdicts == {True, False}
