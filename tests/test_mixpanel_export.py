"""The Raw Event Export client against the Mixpanel emulator over real HTTP."""

import gzip
import hashlib
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

import orjson
import pytest

from mixpanel_assets.coordination import LocalCoordinator, coordinator
from mixpanel_assets.mixpanel.export_client import (
    ExportQuery,
    MixpanelExportClient,
    MixpanelExportError,
)
from mixpanel_assets.mixpanel.rate_budget import RateBudget
from mixpanel_assets.mixpanel.sensors import late_events_where
from mixpanel_assets.sandbox.mixpanel_emulator import Fault, MixpanelEmulator

DAY = date(2026, 11, 2)
USERNAME, SECRET = "svc.mp-service-account", "s3cr3t-value"


@pytest.fixture
def emulator() -> Iterator[MixpanelEmulator]:
    with MixpanelEmulator(
        username=USERNAME, secret=SECRET, events_per_day=250, today=lambda: date(2026, 11, 10)
    ) as running:
        yield running


def _client(emulator: MixpanelEmulator, **overrides: object) -> MixpanelExportClient:
    settings: dict = {
        "project_id": emulator.project_id,
        "username": USERNAME,
        "secret": SECRET,
        "export_url": emulator.export_url,
        "max_attempts": 3,
        "retry_base_seconds": 0.01,
    }
    return MixpanelExportClient(**{**settings, **overrides})


def _expected_body(emulator: MixpanelEmulator, day: date = DAY) -> bytes:
    return b"".join(line + b"\n" for line in emulator.events_for_day(day))


def test_a_day_is_stored_byte_for_byte_and_summarised(
    emulator: MixpanelEmulator, tmp_path: Path
) -> None:
    target = tmp_path / "day.jsonl.gz"
    summary = _client(emulator).export_to_file(ExportQuery(DAY, DAY), target)
    body = _expected_body(emulator)
    with gzip.open(target, "rb") as stored:
        assert stored.read() == body
    events = [orjson.loads(line) for line in body.splitlines(keepends=False) if line]
    assert summary.line_count == len(events) > 0
    assert summary.sha256 == hashlib.sha256(body).hexdigest()
    assert summary.byte_count == len(body)
    assert summary.max_processing_time_ms == max(
        event["properties"]["mp_processing_time_ms"] for event in events
    )
    assert summary.attempts == 1
    request = emulator.request_log[-1]
    assert request.query["from_date"] == request.query["to_date"] == "2026-11-02"
    assert request.query["project_id"] == emulator.project_id


def test_u2028_inside_values_does_not_split_lines(
    emulator: MixpanelEmulator, tmp_path: Path
) -> None:
    body = _expected_body(emulator)
    assert "\u2028".encode() in body, "the synthetic day should carry U+2028 in a value"
    summary = _client(emulator).export_to_file(ExportQuery(DAY, DAY), tmp_path / "d.gz")
    assert summary.line_count == body.count(b"\n")
    assert summary.unparseable_lines == 0


def test_a_small_uncompressed_answer_is_compressed_by_us(
    emulator: MixpanelEmulator, tmp_path: Path
) -> None:
    target = tmp_path / "two.jsonl.gz"
    summary = _client(emulator).export_to_file(ExportQuery(DAY, DAY, limit=2), target)
    assert summary.line_count == 2
    with gzip.open(target, "rb") as stored:
        assert stored.read() == b"".join(
            line + b"\n" for line in list(emulator.events_for_day(DAY))[:2]
        )


def test_an_empty_day_is_an_empty_file(tmp_path: Path) -> None:
    with MixpanelEmulator(
        username=USERNAME, secret=SECRET, events_per_day=0, today=lambda: date(2026, 11, 10)
    ) as empty:
        summary = _client(empty).export_to_file(ExportQuery(DAY, DAY), tmp_path / "e.gz")
    assert summary.line_count == 0
    with gzip.open(tmp_path / "e.gz") as stored:
        assert stored.read() == b""


@pytest.mark.parametrize(
    "fault",
    [
        Fault(kind="status", status=429, retry_after=0),
        Fault(kind="status", status=503),
        Fault(kind="reset", after_bytes=3000),
        Fault(kind="terminated_early", after_lines=40),
        Fault(kind="corrupt_gzip", after_bytes=2000),
    ],
    ids=["429", "503", "reset", "terminated-early", "corrupt-gzip"],
)
def test_an_incomplete_answer_is_retried_whole(
    emulator: MixpanelEmulator, tmp_path: Path, fault: Fault
) -> None:
    emulator.queue_fault(fault)
    target = tmp_path / "day.jsonl.gz"
    summary = _client(emulator).export_to_file(ExportQuery(DAY, DAY), target)
    assert summary.attempts == 2
    with gzip.open(target, "rb") as stored:
        assert stored.read() == _expected_body(emulator)
    assert len(emulator.request_log) == 2


def test_persistent_trouble_fails_with_the_cause(
    emulator: MixpanelEmulator, tmp_path: Path
) -> None:
    emulator.queue_fault(Fault(kind="terminated_early", count=3))
    with pytest.raises(MixpanelExportError, match=r"terminated early.*Nothing was published"):
        _client(emulator).export_to_file(ExportQuery(DAY, DAY), tmp_path / "day.gz")
    assert len(emulator.request_log) == 3


@pytest.mark.parametrize(
    ("overrides", "query", "message"),
    [
        ({"secret": "wrong"}, ExportQuery(DAY, DAY), "MIXPANEL_SERVICE_ACCOUNT_SECRET"),
        ({"project_id": "999"}, ExportQuery(DAY, DAY), "MIXPANEL_PROJECT_ID"),
        (
            {"timezone": "Asia/Tokyo"},
            ExportQuery(DAY, date(2026, 11, 11)),
            r"MIXPANEL_PROJECT_TIMEZONE \(Asia/Tokyo\) probably differs",
        ),
    ],
    ids=["credentials", "project", "timezone"],
)
def test_refusals_name_the_cause_and_the_fix(
    emulator: MixpanelEmulator, tmp_path: Path, overrides: dict, query: ExportQuery, message: str
) -> None:
    with pytest.raises(MixpanelExportError, match=message) as raised:
        _client(emulator, **overrides).export_to_file(query, tmp_path / "day.gz")
    assert SECRET not in str(raised.value)
    assert len(emulator.request_log) == 1, "a refusal is not retried"


def test_wrong_url_points_at_the_region(emulator: MixpanelEmulator, tmp_path: Path) -> None:
    wrong = emulator.export_url.replace("/api/2.0/export", "/api/2.0/nothing")
    with pytest.raises(MixpanelExportError, match="MIXPANEL_REGION"):
        _client(emulator, export_url=wrong).export_to_file(ExportQuery(DAY, DAY), tmp_path / "x")


def test_the_late_events_probe_counts_only_events_after_the_watermark(
    emulator: MixpanelEmulator,
) -> None:
    client = _client(emulator)
    watermark = max(
        orjson.loads(line)["properties"]["mp_processing_time_ms"]
        for line in emulator.events_for_day(DAY)
    )
    probe = ExportQuery(DAY, DAY, where=late_events_where(watermark), limit=1)
    assert client.count_events(probe) == 0
    emulator.add_late_events(DAY, 5)
    assert client.count_events(probe) == 1
    unlimited = ExportQuery(DAY, DAY, where=late_events_where(watermark))
    assert client.count_events(unlimited) == 5


def _export_with_shared_budget(
    export_url: str, coordination_url: str, local_folder: Path, target: Path
) -> None:
    """One process's export, paced by the budget every process shares."""
    client = MixpanelExportClient(
        project_id="2384945",
        username=USERNAME,
        secret=SECRET,
        export_url=export_url,
        max_attempts=1,
        budget=RateBudget(
            coordinator(coordination_url, str(local_folder)), "budget", per_hour=60, per_second=2
        ),
    )
    client.export_to_file(ExportQuery(DAY, DAY), target)


@pytest.mark.integration  # several processes, and PostgreSQL
@pytest.mark.parametrize("shared_through", ["files", "postgres"])
def test_processes_share_one_budget_and_never_see_429(
    shared_through: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    coordination_url = (
        request.getfixturevalue("postgres").create_database("budget")
        if shared_through == "postgres"
        else ""
    )
    with MixpanelEmulator(
        username=USERNAME,
        secret=SECRET,
        events_per_day=20,
        today=lambda: date(2026, 11, 10),
        max_requests_per_second=2,
    ) as limited:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=3, mp_context=context) as pool:
            jobs = [
                pool.submit(
                    _export_with_shared_budget,
                    limited.export_url,
                    coordination_url,
                    tmp_path / "budget",
                    tmp_path / f"{index}.gz",
                )
                for index in range(6)
            ]
            for job in jobs:
                job.result()
        log = limited.request_log
    assert [entry.status for entry in log] == [200] * 6
    arrivals = sorted(entry.monotonic for entry in log)
    assert all(
        later - earlier >= 1.0 for earlier, later in zip(arrivals, arrivals[2:], strict=False)
    )


def test_the_hourly_limit_books_the_next_query_an_hour_later(tmp_path: Path) -> None:
    now = 1_000_000.0
    state = LocalCoordinator(tmp_path)
    first = RateBudget(state, "budget", per_hour=3, per_second=3, clock=lambda: now)
    assert [first.reserve() for _ in range(3)] == [now, now, now]
    other_process = RateBudget(state, "budget", per_hour=3, per_second=3, clock=lambda: now)
    assert other_process.reserve() == pytest.approx(now + 3600.1)
    assert first.reserve() == pytest.approx(now + 3600.1)


def test_filters_reach_mixpanel(emulator: MixpanelEmulator, tmp_path: Path) -> None:
    query = ExportQuery(DAY, DAY, events=("Purchase", "Sign Up"), time_in_ms=True)
    _client(emulator).export_to_file(query, tmp_path / "f.gz")
    with gzip.open(tmp_path / "f.gz", "rb") as stored:
        events = [orjson.loads(line) for line in stored]
    assert events and {event["event"] for event in events} <= {"Purchase", "Sign Up"}
    assert all(event["properties"]["time"] > 1e12 for event in events)
    assert orjson.loads(emulator.request_log[-1].query["event"]) == ["Purchase", "Sign Up"]
