"""One day of raw export lines -> XDM records, duplicates dropped, the rest quarantined.

Streams from the raw gzip file to two gzip JSON-lines files, so memory stays flat however big
the day is; the ``_id``s already written live in a small SQLite file for the same reason.
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
from typing import IO, Any, NamedTuple

import orjson

from mixpanel_assets.xdm.mapping import (
    InvalidEvent,
    MappingSpec,
    dedup_key,
    map_event,
    parse_event,
)
from mixpanel_assets.xdm.schema import CustomField, empty_value_paths, schema_errors

_COMPRESS_LEVEL = 1
# Processing lags are counted in whole minutes, clamped to two days either way: enough to see a
# timezone offset, and a bounded histogram however many events the day holds.
_LAG_LIMIT_MINUTES = 2 * 24 * 60
_LINE_NUMBER_BYTES = 8


@dataclass
class DayMappingStats:
    raw_lines: int = 0
    records: int = 0
    duplicates_dropped: int = 0
    quarantined: int = 0
    quarantine_reasons: Counter[str] = field(default_factory=Counter)
    event_types: Counter[str] = field(default_factory=Counter)
    # mp_processing_time_ms minus the event's instant, in minutes, for events not imported.
    processing_lag_minutes: Counter[int] = field(default_factory=Counter)

    def processing_lag_summary(self) -> dict[str, Any]:
        """How far Mixpanel's processing trailed the events that came in live (not /import)."""
        fresh = sum(self.processing_lag_minutes.values())
        summary: dict[str, Any] = {"fresh_events": fresh, "median_minutes": None}
        seen = 0
        for minutes in sorted(self.processing_lag_minutes):
            seen += self.processing_lag_minutes[minutes]
            if seen * 2 >= fresh:
                summary["median_minutes"] = minutes
                break
        return summary


class SeenKeys:
    """A set of keys on disk, each with a tag: a day may hold tens of millions of events."""

    def __init__(self, path: Path) -> None:
        self._connection = sqlite3.connect(path, isolation_level=None)
        self._connection.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-32000;"
            "CREATE TABLE IF NOT EXISTS seen (key BLOB PRIMARY KEY, tag BLOB) WITHOUT ROWID;"
        )

    def add(self, key: bytes, tag: bytes = b"") -> bytes | None:
        """Record ``key`` with ``tag``; None when it is new, else the tag it first came with."""
        cursor = self._connection.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (key, tag))
        if cursor.rowcount == 1:
            return None
        (first_tag,) = self._connection.execute(
            "SELECT tag FROM seen WHERE key = ?", (key,)
        ).fetchone()
        return first_tag

    def close(self) -> None:
        self._connection.close()


class MappedEvent(NamedTuple):
    record: dict[str, Any]
    dedup_key: bytes
    # mp_processing_time_ms minus the event's instant (s); None for imported events.
    processing_lag_seconds: float | None


def validation_errors(
    record: dict[str, Any], tenant_id: str, custom_fields: tuple[CustomField, ...] = ()
) -> list[str]:
    """Why AEP would reject ``record``: empty values and schema violations (empty when valid)."""
    errors = [f"empty value: {path}" for path in empty_value_paths(record)]
    errors.extend(f"schema: {error}" for error in schema_errors(record, tenant_id, custom_fields))
    return errors


def map_line(line: bytes, spec: MappingSpec) -> MappedEvent | list[str]:
    """One export line as a valid XDM record, or the reasons it cannot be one; never raises."""
    mapping = spec.compiled
    try:
        name, properties = parse_event(line)
        record, seconds = map_event(name, properties, mapping)
        key = dedup_key(name, properties)
    except InvalidEvent as problem:
        return [str(problem)]
    errors = validation_errors(record, spec.tenant_id, mapping.custom_tenant_fields)
    if errors:
        return errors
    processed_ms = properties.get("mp_processing_time_ms")
    if type(processed_ms) is int and properties.get("$import") is not True:
        return MappedEvent(record, key, processed_ms / 1000 - seconds)
    return MappedEvent(record, key, None)


def map_day(
    raw_path: Path, events_path: Path, quarantine_path: Path, spec: MappingSpec, work_dir: Path
) -> DayMappingStats:
    """Map the raw file; repeats of Mixpanel's dedup key are dropped and counted.

    Each written ``_id`` is remembered with the dedup key of its event: a later line with the
    same ``_id`` is a repeat when its dedup key matches, and otherwise a different event that
    would collide with the first in AEP (same event, time and ``$insert_id``, another
    distinct_id): it is quarantined, so ``_id`` stays unique within the day.
    """
    stats = DayMappingStats()
    seen = SeenKeys(work_dir / "seen-ids.sqlite")
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
                reasons = _place_line(line, stats.raw_lines, spec, seen, stats, events)
                if reasons:
                    stats.quarantined += 1
                    stats.quarantine_reasons[reasons[0].split(":", 1)[0]] += 1
                    quarantine.write(_quarantine_entry(stats.raw_lines, line, reasons) + b"\n")
    finally:
        seen.close()
    return stats


def _place_line(
    line: bytes,
    line_number: int,
    spec: MappingSpec,
    seen: SeenKeys,
    stats: DayMappingStats,
    events: IO[bytes],
) -> list[str]:
    """Write the line's record (or count it as a duplicate); return quarantine reasons if any."""
    mapped = map_line(line, spec)
    if isinstance(mapped, list):
        return mapped
    record = mapped.record
    tag = mapped.dedup_key + line_number.to_bytes(_LINE_NUMBER_BYTES, "big")
    first = seen.add(bytes.fromhex(record["_id"]), tag)
    if first is not None:
        if first[: len(mapped.dedup_key)] == mapped.dedup_key:
            stats.duplicates_dropped += 1
            return []
        first_line = int.from_bytes(first[-_LINE_NUMBER_BYTES:], "big")
        return [
            f"_id collision: line {first_line} has the same _id (same event, time and "
            "$insert_id, or without one the same properties) but another distinct_id, so it "
            "is a different event by Mixpanel's dedup key; AEP keeps one record per _id"
        ]
    events.write(orjson.dumps(record) + b"\n")
    stats.records += 1
    stats.event_types[record["eventType"]] += 1
    if mapped.processing_lag_seconds is not None:
        minutes = round(mapped.processing_lag_seconds / 60)
        stats.processing_lag_minutes[
            max(-_LAG_LIMIT_MINUTES, min(_LAG_LIMIT_MINUTES, minutes))
        ] += 1
    return []


def duplicate_event_ids(
    events_path: Path, work_dir: Path, examples_shown: int
) -> tuple[int, int, list[str]]:
    """(records read, records whose ``_id`` came earlier, a few of them), streaming.

    A record without an ``_id`` is not counted here: required_xdm_fields reports it.
    """
    seen = SeenKeys(work_dir / "check-ids.sqlite")
    records = duplicates = 0
    examples: list[str] = []
    try:
        with gzip.open(events_path, "rb") as lines:
            for records, line in enumerate(lines, start=1):
                document = orjson.loads(line)
                identifier = document.get("_id") if isinstance(document, dict) else None
                if isinstance(identifier, str) and seen.add(identifier.encode()) is not None:
                    duplicates += 1
                    if len(examples) < examples_shown:
                        examples.append(f"record {records}: _id {identifier!r} came before")
    finally:
        seen.close()
    return records, duplicates, examples


def _quarantine_entry(line_number: int, line: bytes, reasons: list[str]) -> bytes:
    """The raw line kept exactly (as text, or base64 when it is not UTF-8) with its reasons."""
    entry: dict[str, Any] = {"line_number": line_number, "reasons": reasons}
    try:
        entry["line"] = line.decode("utf-8")
    except UnicodeDecodeError:
        entry["line_base64"] = base64.b64encode(line).decode("ascii")
    return orjson.dumps(entry)
