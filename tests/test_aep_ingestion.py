"""The AEP client and the day loader against the platform emulator over real HTTP."""

import gzip
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from mixpanel_assets.aep.client import AEPClient, AEPError
from mixpanel_assets.aep.day_batch import (
    DayBatchRequest,
    batch_failed,
    describe_failure,
    live_batches,
    load_day,
)
from mixpanel_assets.sandbox.platform_emulator import PlatformEmulator

SECRET = "client-s3cret"
TENANT = "acme"


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[PlatformEmulator]:
    with PlatformEmulator(
        tmp_path / "platform", client_secret=SECRET, tenant_id=TENANT, processing_seconds=0.02
    ) as running:
        yield running


def _client(platform: PlatformEmulator, **overrides: object) -> AEPClient:
    settings: dict = {
        "ims_url": platform.url,
        "platform_url": platform.url,
        "client_id": "local-sandbox-client",
        "client_secret": SECRET,
        "org_id": "LOCALSANDBOX@AdobeOrg",
        "sandbox_name": "prod",
        "retry_base_seconds": 0.01,
    }
    return AEPClient(**{**settings, **overrides})


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
        "external_id": "mixpanel-1-2026-11-01-test",
        "tags": {"mixpanelAssetsPartition": ["1/2026-11-01"]},
        "predecessors": list(predecessors),
        "max_file_bytes": 200_000_000,
        "partial_ingestion_percent": 0.0,
        "timeout_seconds": 30.0,
        "poll_seconds": 0.02,
    }
    return DayBatchRequest(**{**settings, **changes})


def _ims_requests(platform: PlatformEmulator) -> int:
    return sum(entry.path == "/ims/token/v3" for entry in platform.request_log)


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
    assert _ims_requests(platform) == 1, "the token is fetched once and reused"


def test_a_replay_replaces_the_previous_batch(platform: PlatformEmulator, tmp_path: Path) -> None:
    dataset = platform.create_dataset("events")
    client = _client(platform)
    records = _records_file(tmp_path / "r.gz", [_record(i) for i in range(50)])
    first = load_day(client, records, _request(dataset), tmp_path)
    assert live_batches(client, [first.batch_id]) == [first.batch_id]
    second = load_day(client, records, _request(dataset, [first.batch_id]), tmp_path)
    assert live_batches(client, [first.batch_id, second.batch_id]) == [second.batch_id]
    stored = platform.dataset_records(dataset)
    assert len(stored) == 50 and set(stored["batch_id"]) == {second.batch_id}


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
    assert "INGEST-1212-400" in message
    assert platform.dataset_records(dataset).empty


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


def test_transient_errors_are_retried(platform: PlatformEmulator, tmp_path: Path) -> None:
    dataset = platform.create_dataset("events")
    platform.queue_fault("PUT", "/data/foundation/import/batches", 503, count=2, retry_after=0)
    platform.queue_fault("POST", "/data/foundation/import/batches", 429, retry_after=0)
    records = _records_file(tmp_path / "r.gz", [_record(i) for i in range(10)])
    result = load_day(_client(platform), records, _request(dataset), tmp_path)
    assert result.status == "success" and result.record_count == 10
    assert len(platform.batches(dataset)) == 1, "a retried create made one batch, not two"


def test_a_refused_token_is_renewed_once(platform: PlatformEmulator) -> None:
    client = _client(platform)
    dataset = platform.create_dataset("events")
    platform.queue_fault("GET", "/data/foundation/catalog", 401)
    batch_id = client.create_batch(
        dataset_id=dataset, external_id="x", predecessors=[], tags={}, partial_ingestion_percent=0
    )
    assert client.get_batch(batch_id)["status"] == "loading"
    assert _ims_requests(platform) == 2


def test_bad_credentials_name_the_variables_not_the_secret(platform: PlatformEmulator) -> None:
    client = _client(platform, client_secret="not-the-secret")
    with pytest.raises(AEPError, match="AEP_CLIENT_SECRET") as raised:
        client.get_batch("anything")
    assert "not-the-secret" not in str(raised.value)
