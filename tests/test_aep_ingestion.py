"""The AEP client, the day loader and the day's replay chain against the platform emulator."""

import gzip
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import requests

from mixpanel_assets.aep.client import AEPClient
from mixpanel_assets.aep.day_batch import (
    DayBatchRequest,
    batch_failed,
    describe_failure,
    load_day,
)
from mixpanel_assets.aep.errors import AEPError, AEPRefusal, BatchTimeoutError
from mixpanel_assets.aep.replay import settle_day
from mixpanel_assets.sandbox.platform_emulator import PlatformEmulator
from tests.platform_clients import emulator_client

SECRET = "client-s3cret"
TENANT = "acme"
DAY_TAGS = {"mixpanelAssetsPartition": "1/2026-11-01"}


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[PlatformEmulator]:
    with PlatformEmulator(
        tmp_path / "platform", client_secret=SECRET, tenant_id=TENANT, processing_seconds=0.02
    ) as running:
        yield running


def _client(platform: PlatformEmulator, **overrides: object) -> AEPClient:
    settings: dict = {"client_secret": SECRET, "retry_base_seconds": 0.01, **overrides}
    return emulator_client(platform, **settings)


def _record(index: int, **changes: object) -> dict:
    record = {
        "_id": f"id{index:06d}",
        "timestamp": "2026-11-01T10:00:00.000Z",
        "eventType": "web.webpagedetails.pageViews",
        "identityMap": {"MixpanelDistinctId": [{"id": f"u{index}", "primary": True}]},
        f"_{TENANT}": {"mixpanel": {"eventName": "$mp_web_page_view"}},
    }
    return {**record, **changes}


def _records_file(path: Path, records: list[dict]) -> Path:
    with gzip.open(path, "wb") as out:
        for record in records:
            out.write(orjson.dumps(record) + b"\n")
    return path


def _request(dataset_id: str, predecessors: list[str] = (), **changes: object) -> DayBatchRequest:
    settings: dict = {
        "dataset_id": dataset_id,
        "external_id": f"mixpanel-1-2026-11-01-{time.time_ns()}",
        "tags": {name: [value] for name, value in DAY_TAGS.items()},
        "predecessors": list(predecessors),
        "max_file_bytes": 200_000_000,
        "partial_ingestion_percent": 0.0,
        "timeout_seconds": 30.0,
        "poll_seconds": 0.02,
    }
    return DayBatchRequest(**{**settings, **changes})


def _settle(client: AEPClient, dataset_id: str, known: list[str] = ()):
    return settle_day(
        client,
        dataset_id=dataset_id,
        tags=DAY_TAGS,
        known_batch_ids=known,
        timeout_seconds=30,
        poll_seconds=0.02,
    )


def _requests_to(platform: PlatformEmulator, path: str) -> list[int]:
    return [entry.status for entry in platform.request_log if entry.path == path]


def test_a_day_loads_in_files_under_the_size_limit(
    platform: PlatformEmulator, tmp_path: Path
) -> None:
    dataset = platform.create_dataset("events")
    records = _records_file(tmp_path / "r.gz", [_record(i) for i in range(500)])
    work = tmp_path / "work"
    work.mkdir()
    result = load_day(_client(platform), records, _request(dataset, max_file_bytes=20_000), work)
    assert not batch_failed(result)
    assert result.record_count == result.uploaded_records == 500
    assert result.files > 1 and result.bytes > 20_000
    assert list(work.iterdir()) == [], "each part file is removed once uploaded"
    stored = platform.dataset_records(dataset)
    assert sorted(stored["_id"]) == [f"id{i:06d}" for i in range(500)]
    assert platform.batch(result.batch_id)["inputFormat"]["format"] == "json"
    assert len(_requests_to(platform, "/ims/token/v3")) == 1, "one token, reused"


def test_the_catalog_alone_finds_the_batch_a_re_run_must_replace(
    platform: PlatformEmulator, tmp_path: Path
) -> None:
    dataset = platform.create_dataset("events")
    client = _client(platform)
    records = _records_file(tmp_path / "r.gz", [_record(i) for i in range(50)])
    assert _settle(client, dataset).live == []
    first = load_day(client, records, _request(dataset), tmp_path)

    settled = _settle(client, dataset)  # nothing remembered: found by the day's tag
    assert settled.live == [first.batch_id] and settled.aborted == []
    second = load_day(client, records, _request(dataset, settled.live), tmp_path)

    assert _settle(client, dataset, [first.batch_id]).live == [second.batch_id]
    stored = platform.dataset_records(dataset)
    assert len(stored) == 50 and set(stored["batch_id"]) == {second.batch_id}
    assert platform.batch(first.batch_id)["tags"]["acp_successor"] == [second.batch_id]


def test_settling_a_day_aborts_a_dead_run_and_waits_for_one_in_flight(
    tmp_path: Path,
) -> None:
    with PlatformEmulator(
        tmp_path, tenant_id=TENANT, client_secret=SECRET, processing_seconds=0.6
    ) as platform:
        dataset = platform.create_dataset("events")
        other_dataset = platform.create_dataset("elsewhere")
        client = _client(platform)
        tags = {name: [value] for name, value in DAY_TAGS.items()}
        dead = client.create_batch(
            dataset_id=dataset,
            external_id="dead",
            predecessors=[],
            tags=tags,
            partial_ingestion_percent=0,
        )
        in_flight = client.create_batch(
            dataset_id=dataset,
            external_id="flying",
            predecessors=[],
            tags=tags,
            partial_ingestion_percent=0,
        )
        part = tmp_path / "part.json"
        part.write_bytes(orjson.dumps(_record(1)) + b"\n")
        client.upload_file(in_flight, dataset, "part.json", part)
        client.complete_batch(in_flight)
        elsewhere = client.create_batch(
            dataset_id=other_dataset,
            external_id="x",
            predecessors=[],
            tags={},
            partial_ingestion_percent=0,
        )

        settled = _settle(client, dataset, [elsewhere, "01UNKNOWNBATCH"])

        assert settled.aborted == [dead]
        assert settled.live == [in_flight], "waited for until it went live"
        assert platform.batch(dead)["status"] == "aborted"
        assert platform.batch(elsewhere)["status"] == "loading", "another dataset's: untouched"


def test_the_end_of_processing_is_noticed_soon_without_flooding_the_catalog(
    tmp_path: Path,
) -> None:
    """Polls pause a tenth of the time waited: a batch done after about 3.3 s is seen within
    a second (doubling pauses from 0.05 s would sleep until 6.35 s), in a few dozen polls."""
    with PlatformEmulator(
        tmp_path, tenant_id=TENANT, client_secret=SECRET, processing_seconds=3.3
    ) as platform:
        dataset = platform.create_dataset("events")
        client = _client(platform)
        batch_id = client.create_batch(
            dataset_id=dataset,
            external_id="slow",
            predecessors=[],
            tags={},
            partial_ingestion_percent=0,
        )
        part = tmp_path / "part.json"
        part.write_bytes(orjson.dumps(_record(1)) + b"\n")
        client.upload_file(batch_id, dataset, "part.json", part)
        client.complete_batch(batch_id)

        batch = client.wait_for_batch(batch_id, timeout_seconds=30, poll_seconds=0.05)
        noticed_ms = time.time() * 1000

        assert batch["status"] == "success"
        assert noticed_ms - batch["completed"] < 1000
        polls = _requests_to(platform, f"/data/foundation/catalog/batches/{batch_id}")
        assert 10 <= len(polls) <= 40


def test_an_abandoned_batch_of_the_day_is_left_alone(tmp_path: Path) -> None:
    with PlatformEmulator(
        tmp_path, tenant_id=TENANT, client_secret=SECRET, abandon_after_seconds=0.05
    ) as platform:
        dataset = platform.create_dataset("events")
        client = _client(platform)
        tags = {name: [value] for name, value in DAY_TAGS.items()}
        left = client.create_batch(
            dataset_id=dataset,
            external_id="x",
            predecessors=[],
            tags=tags,
            partial_ingestion_percent=0,
        )
        time.sleep(0.1)
        assert _settle(client, dataset) == _settle(client, dataset, [left])
        settled = _settle(client, dataset)
        assert (settled.live, settled.aborted) == ([], [])
        assert platform.batch(left)["status"] == "abandoned"


def test_a_rejected_batch_says_which_records_and_why(
    platform: PlatformEmulator, tmp_path: Path
) -> None:
    dataset = platform.create_dataset("events")
    bad = [_record(0), _record(1, timestamp="1700000000"), _record(2, eventType=None)]
    result = load_day(
        _client(platform), _records_file(tmp_path / "r.gz", bad), _request(dataset), tmp_path
    )
    assert batch_failed(result)
    message = describe_failure(result)
    assert "failed" in message and "2 of 3 records failed" in message
    assert "INGEST-1212-400" in message and "INGEST-1555-400" in message
    assert "1550 (_id id000001): #/timestamp" in message, "the failed rows, with their _id"
    assert "1555,1550 (_id id000002): #/eventType null or empty value" in message
    assert "u1" not in message, "the record's content stays out of the message"
    assert platform.dataset_records(dataset).empty


def test_a_batch_aep_fails_names_aeps_reason(platform: PlatformEmulator, tmp_path: Path) -> None:
    dataset = platform.create_dataset("events")
    platform.fail_next_batch("INGEST-2301-500", "The storage layer is unavailable.")
    records = _records_file(tmp_path / "r.gz", [_record(0)])
    result = load_day(_client(platform), records, _request(dataset), tmp_path)
    assert batch_failed(result)
    assert "INGEST-2301-500: The storage layer is unavailable." in describe_failure(result)
    assert platform.batch(result.batch_id)["status"] == "failed"


def test_partial_ingestion_keeps_the_accepted_rows_and_reports_the_rest(
    platform: PlatformEmulator, tmp_path: Path
) -> None:
    dataset = platform.create_dataset("events")
    platform.reject_rows_of_next_batch(1)
    records = _records_file(tmp_path / "r.gz", [_record(i) for i in range(10)])
    result = load_day(
        _client(platform), records, _request(dataset, partial_ingestion_percent=20), tmp_path
    )
    assert not batch_failed(result)
    assert (result.record_count, result.failed_record_count) == (9, 1)
    assert result.failed_percent == pytest.approx(10.0)
    (row,) = result.failed_rows
    assert row["_errors"][0]["code"] == "1550"
    assert len(platform.dataset_records(dataset)) == 9


def test_a_failure_after_creation_aborts_the_batch(
    platform: PlatformEmulator, tmp_path: Path
) -> None:
    dataset = platform.create_dataset("events")
    platform.queue_fault("PUT", "/data/foundation/import/batches", 400)
    records = _records_file(tmp_path / "r.gz", [_record(0)])
    with pytest.raises(AEPError, match="HTTP 400"):
        load_day(_client(platform), records, _request(dataset), tmp_path)
    (batch,) = platform.batches(dataset)
    assert batch["status"] == "aborted"


def test_a_failed_upload_stops_the_day_while_the_next_file_is_cut(
    platform: PlatformEmulator, tmp_path: Path
) -> None:
    dataset = platform.create_dataset("events")
    platform.queue_fault("PUT", "/data/foundation/import/batches", 400)
    records = _records_file(tmp_path / "r.gz", [_record(i) for i in range(500)])
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(AEPError, match="HTTP 400"):
        load_day(_client(platform), records, _request(dataset, max_file_bytes=20_000), work)
    (batch,) = platform.batches(dataset)
    assert batch["status"] == "aborted"
    puts = [entry.status for entry in platform.request_log if entry.method == "PUT"]
    assert puts == [400], "no file is uploaded after one failed"
    assert len(list(work.iterdir())) <= 2, "at most the failed file and the next one cut"


def test_a_create_whose_answer_was_lost_leaves_no_loading_batch(
    platform: PlatformEmulator, tmp_path: Path
) -> None:
    dataset = platform.create_dataset("events")
    platform.queue_fault("POST", "/data/foundation/import/batches", 502, after_handling=True)
    records = _records_file(tmp_path / "r.gz", [_record(0)])
    with pytest.raises(AEPError, match="HTTP 502"):
        load_day(_client(platform), records, _request(dataset), tmp_path)
    (batch,) = platform.batches(dataset)
    assert batch["status"] == "aborted", "AEP made it; the loader found it and aborted it"


def test_transient_errors_are_retried(platform: PlatformEmulator, tmp_path: Path) -> None:
    dataset = platform.create_dataset("events")
    platform.queue_fault("POST", "/ims/token/v3", 503, count=2, retry_after=0)
    platform.queue_fault("PUT", "/data/foundation/import/batches", 503, count=2, retry_after=0)
    platform.queue_fault("POST", "/data/foundation/import/batches", 429, retry_after=0)
    records = _records_file(tmp_path / "r.gz", [_record(i) for i in range(10)])
    result = load_day(_client(platform), records, _request(dataset), tmp_path)
    assert result.status == "success" and result.record_count == 10
    assert len(platform.batches(dataset)) == 1, "a retried create made one batch, not two"
    assert _requests_to(platform, "/ims/token/v3") == [503, 503, 200]


def test_complete_is_retried_safely(platform: PlatformEmulator, tmp_path: Path) -> None:
    dataset = platform.create_dataset("events")
    # COMPLETE is carried out, but its answer is lost: the retry must not process twice.
    platform.queue_fault("POST", "/data/foundation/import/batches/", 500, after_handling=True)
    records = _records_file(tmp_path / "r.gz", [_record(i) for i in range(10)])
    result = load_day(_client(platform), records, _request(dataset), tmp_path)
    assert result.status == "success" and result.record_count == 10
    assert len(platform.dataset_records(dataset)) == 10
    completes = [
        entry.status
        for entry in platform.request_log
        if entry.method == "POST" and entry.path.endswith(result.batch_id)
    ]
    assert completes == [500, 200]


def test_a_short_lived_token_is_renewed_before_aep_refuses_it(tmp_path: Path) -> None:
    with PlatformEmulator(
        tmp_path,
        tenant_id=TENANT,
        client_secret=SECRET,
        token_lifetime_seconds=1,
        processing_seconds=1.1,
    ) as platform:
        dataset = platform.create_dataset("events")
        records = _records_file(tmp_path / "r.gz", [_record(i) for i in range(10)])
        result = load_day(_client(platform), records, _request(dataset), tmp_path)
        assert result.status == "success"
        assert len(_requests_to(platform, "/ims/token/v3")) >= 2
        assert all(entry.status != 401 for entry in platform.request_log)


def test_a_refused_token_is_renewed_once(platform: PlatformEmulator) -> None:
    client = _client(platform)
    dataset = platform.create_dataset("events")
    platform.queue_fault("GET", "/data/foundation/catalog", 401)
    batch_id = client.create_batch(
        dataset_id=dataset, external_id="x", predecessors=[], tags={}, partial_ingestion_percent=0
    )
    assert client.get_batch(batch_id)["status"] == "loading"
    assert len(_requests_to(platform, "/ims/token/v3")) == 2


def test_bad_credentials_name_the_variables_not_the_secret(platform: PlatformEmulator) -> None:
    client = _client(platform, client_secret="not-the-secret")
    with pytest.raises(AEPError, match="AEP_CLIENT_SECRET") as raised:
        client.get_batch("anything")
    assert "not-the-secret" not in str(raised.value)
    assert _requests_to(platform, "/ims/token/v3") == [401], "a refusal is not retried"


def test_tls_verification_cannot_be_turned_off(platform: PlatformEmulator) -> None:
    insecure = requests.Session()
    insecure.verify = False
    with pytest.raises(ValueError, match="TLS"):
        _client(platform, session=insecure)


def test_a_catalog_that_ignores_the_tags_filter_never_makes_a_re_run_replace_another_day(
    platform: PlatformEmulator, tmp_path: Path
) -> None:
    dataset = platform.create_dataset("events")
    client = _client(platform)
    records = _records_file(tmp_path / "r.gz", [_record(i) for i in range(20)])
    other_day = {"mixpanelAssetsPartition": ["1/2026-10-31"]}
    other_project = {"mixpanelAssetsPartition": ["2/2026-11-01"]}
    neighbours = [
        load_day(client, records, _request(dataset, tags=tags), tmp_path).batch_id
        for tags in (other_day, other_project)
    ]
    day = load_day(client, records, _request(dataset), tmp_path).batch_id
    platform.honours_tag_filter = False

    # Neither the Catalog's answer nor a remembered id may bring in another day's batch.
    assert _settle(client, dataset, known=neighbours).live == [day]
    assert all(platform.batch(batch)["status"] == "success" for batch in neighbours)


def test_ids_in_request_paths_are_url_encoded(platform: PlatformEmulator) -> None:
    client = _client(platform)
    with pytest.raises(AEPRefusal) as refused:
        client.get_dataset("../batches/x?y#z")
    assert refused.value.status == 404
    with pytest.raises(AEPRefusal):
        client.get_batch("a/b")
    paths = [entry.path for entry in platform.request_log if entry.path.startswith("/data/")]
    assert paths == [
        "/data/foundation/catalog/dataSets/..%2Fbatches%2Fx%3Fy%23z",
        "/data/foundation/catalog/batches/a%2Fb",
    ]


def test_a_partially_ingested_batch_has_its_row_errors_read_from_the_meta_files(
    platform: PlatformEmulator, tmp_path: Path
) -> None:
    dataset = platform.create_dataset("events")
    platform.reject_rows_of_next_batch(2)
    records = [_record(i) for i in range(19)]
    lines = [orjson.dumps(record) for record in records] + [b"not json"]
    path = tmp_path / "r.gz"
    with gzip.open(path, "wb") as out:
        out.write(b"\n".join(lines) + b"\n")
    result = load_day(
        _client(platform), path, _request(dataset, partial_ingestion_percent=20), tmp_path
    )
    assert result.status == "success" and result.failed_record_count == 3
    # recordCount counts every processed record: 17 accepted of 20, 15% failed.
    assert (result.record_count, result.processed_count) == (17, 20)
    assert result.failed_percent == pytest.approx(15.0)
    assert sorted(row["_errors"][0]["code"] for row in result.failed_rows) == [
        "1401",
        "1550",
        "1550",
    ]
    meta = f"/data/foundation/export/batches/{result.batch_id}/meta"
    assert _requests_to(platform, meta) == [200, 200, 200], "listed, then both files read"


def test_archived_batches_are_not_waited_for_and_retained_ones_are_replaced(
    platform: PlatformEmulator, tmp_path: Path
) -> None:
    dataset = platform.create_dataset("events")
    client = _client(platform)
    records = _records_file(tmp_path / "r.gz", [_record(i) for i in range(5)])
    archived = load_day(client, records, _request(dataset), tmp_path).batch_id
    platform.set_batch_status(archived, "archived")
    retained = load_day(client, records, _request(dataset), tmp_path).batch_id
    platform.set_batch_status(retained, "retained")
    started = time.monotonic()
    settled = settle_day(
        client,
        dataset_id=dataset,
        tags=DAY_TAGS,
        known_batch_ids=[],
        timeout_seconds=2,
        poll_seconds=0.02,
    )
    assert settled.live == [retained]
    assert time.monotonic() - started < 1.5, "a finished batch is never waited for"


def test_a_batch_timeout_leaves_the_batch_to_aep_and_the_next_run_replaces_it(
    tmp_path: Path,
) -> None:
    with PlatformEmulator(
        tmp_path / "platform", tenant_id=TENANT, client_secret=SECRET, processing_seconds=1.0
    ) as platform:
        dataset = platform.create_dataset("events")
        client = _client(platform)
        records = _records_file(tmp_path / "r.gz", [_record(i) for i in range(5)])
        with pytest.raises(BatchTimeoutError, match=r"not cancelled.*may still go live") as raised:
            load_day(client, records, _request(dataset, timeout_seconds=0.2), tmp_path)
        assert "re-running the day loses and doubles nothing" in str(raised.value)
        actions = [
            entry
            for entry in platform.request_log
            if entry.path.startswith("/data/foundation/import/batches/") and entry.method == "POST"
        ]
        assert len(actions) == 1, "COMPLETE only: an abort of a completed batch is refused"
        (late,) = platform.batches(dataset)
        assert _settle(client, dataset).live == [late["id"]], "waited for, then replaced"
        assert platform.batch(late["id"])["status"] == "success"
