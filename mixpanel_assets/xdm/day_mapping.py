"""One day of raw export lines -> XDM records, duplicates dropped, the rest quarantined.

Streams from the raw gzip file to two gzip JSON-lines files, so memory stays flat however big
the day is; the set of dedup keys already seen lives in a small SQLite file for the same reason.
Every raw line ends up in exactly one place: a record, a dropped duplicate, or a quarantined line
with its reasons, which is what the reconciliation check counts on.
"""

from __future__ import annotations

import base64
import gzip
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from mixpanel_assets.xdm.mapping import InvalidEvent, MappingSpec, dedup_key, parse_event, to_xdm
from mixpanel_assets.xdm.schema import empty_value_paths, schema_errors

_COMPRESS_LEVEL = 1


@dataclass
class DayMappingStats:
    raw_lines: int = 0
    records: int = 0
    duplicates_dropped: int = 0
    quarantined: int = 0
    quarantine_reasons: Counter[str] = field(default_factory=Counter)
    event_types: Counter[str] = field(default_factory=Counter)


class SeenKeys:
    """A set of dedup keys on disk: a day may hold tens of millions of events."""

    def __init__(self, path: Path) -> None:
        self._connection = sqlite3.connect(path, isolation_level=None)
        self._connection.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-32000;"
            "CREATE TABLE IF NOT EXISTS seen (key BLOB PRIMARY KEY) WITHOUT ROWID;"
        )

    def add(self, key: bytes) -> bool:
        """Record ``key``; False when it was already there."""
        cursor = self._connection.execute("INSERT OR IGNORE INTO seen VALUES (?)", (key,))
        return cursor.rowcount == 1

    def close(self) -> None:
        self._connection.close()


def validation_errors(record: dict[str, Any], tenant_id: str) -> list[str]:
    """Why AEP would reject ``record``: empty values and schema violations (empty when valid)."""
    errors = [f"empty value at {path}" for path in empty_value_paths(record)]
    errors.extend(f"schema: {error}" for error in schema_errors(record, tenant_id))
    return errors


def map_day(
    raw_path: Path, events_path: Path, quarantine_path: Path, spec: MappingSpec, work_dir: Path
) -> DayMappingStats:
    stats = DayMappingStats()
    seen = SeenKeys(work_dir / "seen-keys.sqlite")
    try:
        with (
            gzip.open(raw_path, "rb") as raw,
            gzip.open(events_path, "wb", compresslevel=_COMPRESS_LEVEL) as events,
            gzip.open(quarantine_path, "wb", compresslevel=_COMPRESS_LEVEL) as quarantine,
        ):
            for line in raw:
                line = line.rstrip(b"\n")
                if not line:
                    continue
                stats.raw_lines += 1
                reasons = _map_line(line, spec, seen, stats, events)
                if reasons:
                    stats.quarantined += 1
                    stats.quarantine_reasons[reasons[0].split(":", 1)[0]] += 1
                    quarantine.write(_quarantine_entry(stats.raw_lines, line, reasons) + b"\n")
    finally:
        seen.close()
    return stats


def _map_line(
    line: bytes, spec: MappingSpec, seen: SeenKeys, stats: DayMappingStats, events: Any
) -> list[str]:
    """Write the line's record (or count it as a duplicate); return quarantine reasons if any."""
    try:
        name, properties = parse_event(line)
        if not seen.add(dedup_key(name, properties)):
            stats.duplicates_dropped += 1
            return []
        record = to_xdm(name, properties, spec)
    except InvalidEvent as problem:
        return [str(problem)]
    errors = validation_errors(record, spec.tenant_id)
    if errors:
        return errors
    events.write(orjson.dumps(record) + b"\n")
    stats.records += 1
    stats.event_types[record["eventType"]] += 1
    return []


def _quarantine_entry(line_number: int, line: bytes, reasons: list[str]) -> bytes:
    """The raw line kept exactly (as text, or base64 when it is not UTF-8) with its reasons."""
    entry: dict[str, Any] = {"line_number": line_number, "reasons": reasons}
    try:
        entry["line"] = line.decode("utf-8")
    except UnicodeDecodeError:
        entry["line_base64"] = base64.b64encode(line).decode("ascii")
    return orjson.dumps(entry)
