"""One day through the mapping, on real gzip files: every raw line ends up as a record, a
counted duplicate or a quarantined line with its reasons; ``_id`` stays unique."""

import gzip
import time
from pathlib import Path

import orjson
import pytest

from mixpanel_assets.xdm.check_facts import duplicate_event_ids
from mixpanel_assets.xdm.checks import suspected_time_offset_minutes
from mixpanel_assets.xdm.day_mapping import map_day
from mixpanel_assets.xdm.mapping import MappingSpec

SPEC = MappingSpec(project_id="2384945", tenant_id="acme")
NOW = int(time.time())


def _line(name: str, **properties: object) -> bytes:
    return orjson.dumps({"event": name, "properties": properties})


def _write_gzip(path: Path, lines: list[bytes]) -> Path:
    with gzip.open(path, "wb") as file:
        file.writelines(line + b"\n" for line in lines)
    return path


def _read_gzip(path: Path) -> list[dict]:
    with gzip.open(path, "rb") as file:
        return [orjson.loads(line) for line in file]


def _map(tmp_path: Path, lines: list[bytes]):
    raw = _write_gzip(tmp_path / "raw.jsonl.gz", lines)
    stats = map_day(raw, tmp_path / "events.gz", tmp_path / "quarantine.gz", SPEC, tmp_path)
    return stats, _read_gzip(tmp_path / "events.gz"), _read_gzip(tmp_path / "quarantine.gz")


def test_every_raw_line_is_a_record_a_duplicate_or_quarantined_with_reasons(
    tmp_path: Path,
) -> None:
    live = {"time": NOW - 3600, "mp_processing_time_ms": (NOW - 3600) * 1000 + 4000}
    view = _line("$mp_web_page_view", distinct_id="u1", **{"$insert_id": "a"}, **live)
    same_view_other_user = _line(
        "$mp_web_page_view", distinct_id="u2", **{"$insert_id": "a"}, **live
    )
    lines = [
        view,
        view,  # an exact repeat: dropped and counted
        _line("Purchase", distinct_id="u1", **{"$insert_id": "b"}, **live),
        same_view_other_user,  # same _id, another distinct_id: a different event
        b"terminated early",
        _line("Sign Up", **{"$insert_id": "c", "time": NOW - 60}),
        b"\xff\xfe not utf-8",
        _line("Imported", distinct_id="u3", **{"$import": True, "$insert_id": "d"}, **live),
    ]
    stats, records, quarantined = _map(tmp_path, lines)

    assert (stats.raw_lines, stats.records, stats.duplicates_dropped, stats.quarantined) == (
        8,
        3,
        1,
        4,
    )
    assert [record["_acme"]["mixpanel"]["eventName"] for record in records] == [
        "$mp_web_page_view",
        "Purchase",
        "Imported",
    ]
    assert len({record["_id"] for record in records}) == 3
    assert stats.event_types == {
        "web.webpagedetails.pageViews": 1,
        "commerce.purchases": 1,
        "mixpanel.event": 1,
    }
    assert dict(stats.quarantine_reasons) == {
        "_id collision": 1,
        "not JSON": 2,
        "no identity": 1,
    }
    assert [entry["line_number"] for entry in quarantined] == [4, 5, 6, 7]
    collision, not_json, no_identity, not_utf8 = quarantined
    assert collision["line"] == same_view_other_user.decode()
    assert collision["reasons"][0].startswith("_id collision: line 1 has the same _id")
    assert not_json["line"] == "terminated early"
    assert no_identity["reasons"] == [
        "no identity: distinct_id, $user_id and $device_id are all missing"
    ]
    assert not_utf8["line_base64"] == "//4gbm90IHV0Zi04"
    # Live events were processed 4 s after their time; the imported one does not count.
    assert stats.processing_lag_summary() == {"fresh_events": 2, "median_minutes": 0}


def test_a_legacy_local_time_read_as_utc_shows_as_a_whole_hour_processing_lag(
    tmp_path: Path,
) -> None:
    true_time = NOW - 86400
    lines = [
        _line(
            "E",
            distinct_id=f"u{index}",
            time=true_time + index - 5 * 3600,  # New York wall-clock time, stored as if UTC
            mp_processing_time_ms=(true_time + index) * 1000 + 2500,
            **{"$insert_id": str(index)},
        )
        for index in range(30)
    ]
    stats, records, _ = _map(tmp_path, lines)
    assert len(records) == 30
    summary = stats.processing_lag_summary()
    assert summary == {"fresh_events": 30, "median_minutes": 300}
    assert suspected_time_offset_minutes(summary["fresh_events"], summary["median_minutes"]) == 300


@pytest.mark.parametrize(
    ("fresh_events", "median_minutes", "suspected"),
    [
        (500, 0, None),  # processed within a minute: a UTC project read as UTC
        (500, 3, None),
        (500, 45, None),  # a slow day, not a timezone
        (500, -300, -300),
        (500, 482, 480),
        (500, -330, -330),  # India, +5:30
        (500, -346, -345),  # Nepal, +5:45
        (500, 200, None),  # 3 h 20: not near any offset
        (10, 300, None),  # too few live events to judge
        (0, None, None),
    ],
)
def test_a_timezone_mix_up_is_told_from_an_ordinary_lag(
    fresh_events: int, median_minutes: int | None, suspected: int | None
) -> None:
    assert suspected_time_offset_minutes(fresh_events, median_minutes) == suspected


def test_repeated_ids_in_a_records_file_are_found_with_bounded_memory(tmp_path: Path) -> None:
    records = [
        {"_id": f"{index:064x}", "timestamp": "2026-01-01T00:00:00.000Z"} for index in range(5)
    ]
    records += [records[1], records[3], {"timestamp": "x"}, {"timestamp": "y"}]
    path = _write_gzip(tmp_path / "events.gz", [orjson.dumps(record) for record in records])
    read, repeated, examples = duplicate_event_ids(path, tmp_path, 2)
    assert (read, repeated) == (9, 2)  # a missing _id is required_xdm_fields' to report
    assert examples == [
        f"record 6: _id {records[1]['_id']!r} came before",
        f"record 7: _id {records[3]['_id']!r} came before",
    ]
