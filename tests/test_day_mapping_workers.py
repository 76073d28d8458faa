"""A day mapped by worker processes gives the same files and counts as one mapped in-process,
and the facts the checks judge it by are those of the files as written."""

import dataclasses
import gzip
import hashlib
import time
from datetime import UTC, datetime
from itertools import accumulate
from pathlib import Path

import orjson
import pytest

from mixpanel_assets.settings import ConfigError
from mixpanel_assets.xdm.check_facts import FactsCollector, duplicate_event_ids, missing_required
from mixpanel_assets.xdm.day_mapping import DayMappingStats, map_day
from mixpanel_assets.xdm.line_mapping import ChunkOutcome
from mixpanel_assets.xdm.mapping import MappingSpec
from mixpanel_assets.xdm.resource import XdmMappingResource
from mixpanel_assets.xdm.validity import sampled

SPEC = MappingSpec(project_id="2384945", tenant_id="acme")
NOW = int(time.time())


# Lines that repeat an earlier event, and lines with an earlier event's _id (same event, time
# and $insert_id) but another distinct_id: chunks apart (a chunk is about 1,300 lines).
REPEATS = {index: index - 2001 for index in range(2500, 6000, 500)}
COLLISIONS = {index: index - 3001 for index in range(3250, 6000, 700)}


def _raw_day(path: Path, events: int) -> Path:
    with gzip.open(path, "wb") as raw:
        for index in range(events):
            source = REPEATS.get(index, COLLISIONS.get(index, index))
            properties = {
                "time": NOW - 86400 + source,
                "distinct_id": "someone else" if index in COLLISIONS else f"u{source % 97}",
                "$insert_id": f"i{source}",
                "mp_processing_time_ms": (NOW - 86400 + source) * 1000 + 1500,
                "note": "x" * 600,  # about 800 bytes a line, as real events
            }
            raw.write(orjson.dumps({"event": f"E{source % 5}", "properties": properties}) + b"\n")
            if index % 900 == 3:
                raw.write(b"\n" + b"not json\n" + b"\xff\xfe\n")
            if index % 1000 == 5:
                raw.write(orjson.dumps({"event": "E", "properties": {"time": NOW - 60}}) + b"\n")
    return path


def _map(raw: Path, out: Path, workers: int) -> tuple[DayMappingStats, bytes, bytes]:
    out.mkdir()
    stats = map_day(raw, out / "events.gz", out / "quarantine.gz", SPEC, out, workers=workers)
    with gzip.open(out / "events.gz", "rb") as events, gzip.open(out / "quarantine.gz") as bad:
        return stats, events.read(), bad.read()


def test_workers_write_the_same_files_and_counts_as_one_process(tmp_path: Path) -> None:
    raw = _raw_day(tmp_path / "raw.jsonl.gz", 6000)
    alone = _map(raw, tmp_path / "alone", workers=1)
    pooled = _map(raw, tmp_path / "pooled", workers=2)
    assert pooled == alone
    stats, events, quarantined = alone
    assert (stats.raw_lines, stats.records, stats.duplicates_dropped, stats.quarantined) == (
        6000 + 7 * 2 + 6,
        6000 - len(REPEATS) - len(COLLISIONS),
        len(REPEATS),
        len(COLLISIONS) + 7 * 2 + 6,
    )
    assert stats.quarantine_reasons == {"_id collision": 4, "not JSON": 14, "no identity": 6}
    assert len(events.splitlines()) == stats.records
    entries = [orjson.loads(line) for line in quarantined.splitlines()]
    collisions = [entry for entry in entries if entry["reasons"][0].startswith("_id collision")]
    # Line numbers count non-empty raw lines: the 3 bad lines after every 900 and 1,000 shift them.
    assert [entry["line_number"] for entry in collisions] == [3263, 3965, 4668, 5369]
    assert collisions[0]["reasons"][0].startswith("_id collision: line 253 has the same _id")
    assert orjson.loads(collisions[0]["line"])["properties"]["distinct_id"] == "someone else"


def test_a_negative_worker_count_names_its_variable() -> None:
    with pytest.raises(ConfigError, match="MIXPANEL_ASSETS_MAPPING_WORKERS=-2"):
        XdmMappingResource(tenant_id="acme", workers=-2).worker_count()
    assert XdmMappingResource(tenant_id="acme", workers=0).worker_count() is None
    assert XdmMappingResource(tenant_id="acme", workers=3).worker_count() == 3


def test_the_checks_facts_are_those_of_the_files_as_written(tmp_path: Path) -> None:
    raw = _raw_day(tmp_path / "raw.jsonl.gz", 6000)
    stats, events, quarantined = _map(raw, tmp_path / "pooled", workers=2)
    facts = stats.check_facts
    out = tmp_path / "pooled"
    assert facts["events_sha256"] == hashlib.sha256((out / "events.gz").read_bytes()).hexdigest()
    assert (
        facts["quarantine_sha256"]
        == hashlib.sha256((out / "quarantine.gz").read_bytes()).hexdigest()
    )
    lines = events.splitlines()
    assert facts["records"] == facts["ids_read"] == len(lines) == stats.records
    assert facts["quarantine_lines"] == len(quarantined.splitlines()) == stats.quarantined
    # The checks' own way over the file finds what the facts say: no problem, no repeated _id.
    now = datetime.now(UTC)
    assert not any(missing_required(orjson.loads(line), now) for line in lines)
    assert duplicate_event_ids(out / "events.gz", tmp_path, 5)[:2] == (len(lines), 0)
    # Walked for empty values: the written records of the sample validated in full, no others.
    in_sample = sum(sampled(orjson.loads(line)["_id"]) for line in lines)
    assert facts["records_walked_for_empty_values"] == in_sample
    assert (facts["records_with_problems"], facts["repeated_ids"]) == (0, 0)


def test_without_a_proof_every_written_record_is_walked_and_dropped_ones_are_not(
    tmp_path: Path,
) -> None:
    spec = MappingSpec(project_id="2384945", tenant_id="acme")
    spec.__dict__["compiled"] = dataclasses.replace(spec.compiled, proof=None)  # in-process only
    raw = _raw_day(tmp_path / "raw.jsonl.gz", 3000)  # one repeat (line 2500), no collision
    out = tmp_path / "out"
    out.mkdir()
    stats = map_day(raw, out / "events.gz", out / "quarantine.gz", spec, out, workers=1)
    assert stats.duplicates_dropped == 1
    assert stats.records_validated_in_full == stats.records + 1  # the repeat was validated too
    assert stats.check_facts["records_walked_for_empty_values"] == stats.records


def test_the_judge_walks_for_empty_values_unless_told_the_record_was_not_validated() -> None:
    now = datetime.now(UTC)
    record = {
        "_id": "a" * 64,
        "timestamp": "2025-05-01T11:12:50.123Z",
        "identityMap": {"ns": [{"id": "x", "primary": True}]},
        "web": {"name": ""},
    }
    assert missing_required(record, now) == "non-empty values at web/name"
    assert missing_required(record, now, scan_empty=False) == ""
    del record["_id"]
    assert missing_required(record, now, scan_empty=False) == "_id"


def test_facts_number_the_written_records_around_dropped_ones(tmp_path: Path) -> None:
    ids = ["a" * 64, "b" * 64, "c" * 64, "a" * 64, "d" * 64]
    records = [orjson.dumps({"_id": identifier}) + b"\n" for identifier in ids]
    ends = list(accumulate(map(len, records)))
    outcome = ChunkOutcome(
        5,
        bytearray(),
        bytearray(),
        b"".join(records),
        ends,
        [],
        [],
        [],
        [(1, "dropped"), (2, "third")],
        [],
    )
    kept = [0, 2, 3, 4]  # the second record was dropped as a repeat
    collector = FactsCollector(tmp_path)
    try:
        collector.add(outcome, kept, [bytes.fromhex(ids[index]) for index in kept])
    finally:
        collector.close()
    assert collector.problem_examples == ["record 2: third"]
    assert collector.repeated_examples == [f"record 3: _id {'a' * 64!r} came before"]
    assert (collector.records, collector.ids_read, collector.repeated) == (4, 4, 1)


def test_a_chunks_records_without_the_dropped_ones_keep_the_others_whole() -> None:
    records = [b'{"n":%d}\n' % number for number in range(6)]
    outcome = ChunkOutcome(
        6, bytearray(), bytearray(), b"".join(records), list(accumulate(map(len, records))),
        [], [], [], [], [],
    )  # fmt: skip
    assert outcome.record(0) == records[0] and outcome.record(5) == records[5]
    assert outcome.records_without([]) == b"".join(records)
    assert outcome.records_without([0, 2, 3, 5]) == records[1] + records[4]
