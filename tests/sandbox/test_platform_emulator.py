"""The AEP platform emulator over real HTTP: IMS, Batch Ingestion, Catalog, replay, diagnostics.

These tests speak raw ``requests`` (not our AEP client) so they pin the emulator to AEP's
documented contract, which is what the client is then tested against.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from mixpanel_assets.sandbox.platform_emulator import PlatformEmulator

CLIENT_ID = "local-sandbox-client"
CLIENT_SECRET = "local-sandbox-client-secret"
ORG_ID = "LOCALSANDBOX@AdobeOrg"
BATCHES = "/data/foundation/import/batches"
TERMINAL = {"success", "failed", "aborted", "inactive"}


def event(event_id: str, **fields: Any) -> dict[str, Any]:
    """A valid ExperienceEvent in AEP notation; ``fields`` replace or add top-level keys."""
    record: dict[str, Any] = {
        "_id": event_id,
        "timestamp": "2026-11-01T10:00:00.000Z",
        "eventType": "web.webpagedetails.pageViews",
        "identityMap": {"MixpanelDistinctId": [{"id": "u1", "primary": True}]},
        "_localsandbox": {"mixpanel": {"eventName": "x"}},
    }
    record.update(fields)
    return record


def jsonl(*records: dict[str, Any]) -> bytes:
    return b"".join(orjson.dumps(record) + b"\n" for record in records)


class Platform:
    """A minimal raw-HTTP client of the emulator: token, the four headers, the batch calls."""

    def __init__(self, emulator: PlatformEmulator) -> None:
        self.url = emulator.url
        self.session = requests.Session()
        self._token: str | None = None

    def token(self) -> str:
        if self._token is None:
            response = self.session.post(
                self.url + "/ims/token/v3",
                data={
                    "grant_type": "client_credentials",
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "scope": "openid,AdobeID",
                },
            )
            assert response.status_code == 200, response.text
            self._token = response.json()["access_token"]
        return self._token

    def headers(self, **overrides: str) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self.token()}",
            "x-api-key": CLIENT_ID,
            "x-gw-ims-org-id": ORG_ID,
            "x-sandbox-name": "prod",
        }
        headers.update(overrides)
        return headers

    def get(self, api_path: str, **params: Any) -> requests.Response:
        return self.session.get(self.url + api_path, headers=self.headers(), params=params)

    def post_batch(self, body: dict[str, Any]) -> requests.Response:
        return self.session.post(self.url + BATCHES, json=body, headers=self.headers())

    def create_batch(self, dataset_id: str, **fields: Any) -> str:
        body = {"datasetId": dataset_id, "inputFormat": {"format": "json"}, **fields}
        response = self.post_batch(body)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def put_file(
        self, batch_id: str, dataset_id: str, name: str, data: bytes, **headers: str
    ) -> requests.Response:
        return self.session.put(
            f"{self.url}{BATCHES}/{batch_id}/datasets/{dataset_id}/files/{name}",
            data=data,
            headers=self.headers(**{"Content-Type": "application/octet-stream", **headers}),
        )

    def action(self, batch_id: str, action: str) -> requests.Response:
        return self.session.post(
            f"{self.url}{BATCHES}/{batch_id}", params={"action": action}, headers=self.headers()
        )

    def catalog(self, batch_id: str) -> dict[str, Any]:
        response = self.get(f"/data/foundation/catalog/batches/{batch_id}")
        assert response.status_code == 200, response.text
        return response.json()[batch_id]

    def wait(self, batch_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while (batch := self.catalog(batch_id))["status"] not in TERMINAL:
            assert time.monotonic() < deadline, f"batch still {batch['status']}"
            time.sleep(0.01)
        return batch

    def failed_rows(self, batch_id: str) -> list[dict[str, Any]]:
        """Every failed row: a failed batch's under ``/failed``, else (a batch that went live
        with failed rows) those of its ``row_errors`` meta files."""
        return self._rows(batch_id, "failed", "") or self._rows(batch_id, "meta", "row_errors")

    def _rows(self, batch_id: str, endpoint: str, folder: str) -> list[dict[str, Any]]:
        """The listing of the batch's files at ``endpoint``, then each file's rows."""
        path = f"/data/foundation/export/batches/{batch_id}/{endpoint}"
        listing = self.get(path, path=folder) if folder else self.get(path)
        assert listing.status_code == 200, listing.text
        rows = []
        for file in listing.json()["data"]:
            name = f"{folder}/{file['name']}" if folder else file["name"]
            content = self.get(path, path=name)
            assert content.status_code == 200
            assert len(content.content) == int(file["length"])
            rows.extend(orjson.loads(line) for line in content.content.splitlines())
        return rows

    def ingest(self, dataset_id: str, data: bytes, **fields: Any) -> dict[str, Any]:
        """Create, upload one file, COMPLETE and wait: the whole lifecycle of one batch."""
        batch_id = self.create_batch(dataset_id, **fields)
        assert self.put_file(batch_id, dataset_id, "part-0.json", data).status_code == 201
        assert self.action(batch_id, "COMPLETE").status_code == 200
        return self.wait(batch_id)


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[PlatformEmulator]:
    with PlatformEmulator(tmp_path / "aep", processing_seconds=0.02) as running:
        yield running


@pytest.fixture
def platform(emulator: PlatformEmulator) -> Platform:
    return Platform(emulator)


@pytest.fixture
def dataset_id(emulator: PlatformEmulator) -> str:
    return emulator.create_dataset("mixpanel_events")


def test_token_is_issued_for_the_client_credentials_in_the_form_body(
    emulator: PlatformEmulator,
) -> None:
    url = emulator.url + "/ims/token/v3"
    form = {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scope": "openid",
    }

    good = requests.post(url, data=form)
    wrong_secret = requests.post(url, data={**form, "client_secret": "nope"})
    wrong_grant = requests.post(url, data={**form, "grant_type": "password"})
    in_query = requests.post(url, params=form)

    assert good.status_code == 200
    assert good.json()["token_type"] == "bearer"
    assert good.json()["expires_in"] == 86399
    assert len(good.json()["access_token"]) >= 32
    assert (wrong_secret.status_code, wrong_secret.json()["error"]) == (401, "invalid_client")
    assert wrong_secret.json()["error_description"]
    assert (wrong_grant.status_code, wrong_grant.json()["error"]) == (400, "unsupported_grant_type")
    assert in_query.status_code == 400
    assert "body" in in_query.json()["error_description"]


@pytest.mark.parametrize(
    ("overrides", "status", "mentions"),
    [
        ({"Authorization": ""}, 401, "Oauth token is not valid"),
        ({"Authorization": "Bearer forged"}, 401, "Oauth token is not valid"),
        ({"x-api-key": ""}, 403, "x-api-key"),
        ({"x-api-key": "someone-else"}, 403, "x-api-key"),
        ({"x-gw-ims-org-id": "OTHER@AdobeOrg"}, 403, "x-gw-ims-org-id"),
        ({"x-sandbox-name": ""}, 400, "x-sandbox-name"),
        ({"x-sandbox-name": "dev"}, 403, "x-sandbox-name"),
    ],
)
def test_platform_calls_need_a_token_and_the_three_headers(
    platform: Platform, dataset_id: str, overrides: dict[str, str], status: int, mentions: str
) -> None:
    url = f"{platform.url}/data/foundation/catalog/dataSets/{dataset_id}"

    response = requests.get(url, headers=platform.headers(**overrides))

    assert response.status_code == status
    assert mentions in response.text
    assert requests.get(url, headers=platform.headers()).status_code == 200


def test_an_expired_token_is_refused(tmp_path: Path) -> None:
    with PlatformEmulator(tmp_path, token_lifetime_seconds=0) as emulator:
        platform = Platform(emulator)

        response = platform.get("/data/foundation/catalog/batches")

    assert response.status_code == 401
    assert response.json() == {"error_code": "401013", "message": "Oauth token is not valid"}


def test_batch_lifecycle_to_success_stores_every_record_with_counts(
    emulator: PlatformEmulator, platform: Platform, dataset_id: str
) -> None:
    created = platform.post_batch(
        {
            "datasetId": dataset_id,
            "inputFormat": {"format": "json"},
            "externalId": "mixpanel-2026-11-01",
            "enableErrorDiagnostics": True,
            "partialIngestionPercent": 5,
            "tags": {"source": ["mixpanel"]},
        }
    )
    assert created.status_code == 201
    batch_id = created.json()["id"]
    assert created.json()["status"] == "loading"
    assert created.json()["relatedObjects"] == [{"type": "dataSet", "id": dataset_id}]
    assert created.json()["tags"] == {
        "source": ["mixpanel"],
        "acp_enableErrorDiagnostics": ["true"],
        "acp_partialIngestionPercent": ["5"],
    }
    first = jsonl(event("a1"), event("a2"))
    # The data lake does not deduplicate: a repeated _id is a second record.
    second = jsonl(event("a3", eventType="commerce.purchases"), event("a3"))

    assert platform.put_file(batch_id, dataset_id, "day=1/part-0.json", b"{}\n").status_code == 201
    assert platform.put_file(batch_id, dataset_id, "day=1/part-0.json", first).status_code == 200
    assert platform.put_file(batch_id, dataset_id, "day=1/part-1.json", second).status_code == 201
    assert platform.action(batch_id, "COMPLETE").status_code == 200
    batch = platform.wait(batch_id)

    assert batch["status"] == "success"
    assert batch["externalId"] == "mixpanel-2026-11-01"
    assert (batch["recordCount"], batch["failedRecordCount"]) == (4, 0)
    assert batch["metrics"] == {
        "inputByteSize": len(first) + len(second),
        "inputFileCount": 2,
        "inputRecordCount": 4,
        "outputRecordCount": 4,
        "failedRecordCount": 0,
    }
    assert batch["created"] <= batch["started"] <= batch["completed"]
    assert "errors" not in batch
    assert emulator.batch(batch_id) == batch
    records = emulator.dataset_records(dataset_id)
    assert list(records.columns) == ["_id", "timestamp", "eventType", "batch_id", "record"]
    assert list(records["_id"]) == ["a1", "a2", "a3", "a3"]
    assert set(records["batch_id"]) == {batch_id}
    assert records["eventType"].iloc[2] == "commerce.purchases"
    assert orjson.loads(records["record"].iloc[0]) == event("a1")


def test_batch_passes_through_processing_before_its_terminal_status(
    tmp_path: Path,
) -> None:
    with PlatformEmulator(tmp_path, processing_seconds=0.4) as emulator:
        platform = Platform(emulator)
        dataset_id = emulator.create_dataset("events")
        batch_id = platform.create_batch(dataset_id)
        platform.put_file(batch_id, dataset_id, "a.json", jsonl(event("a1")))
        platform.action(batch_id, "COMPLETE")
        seen: list[str] = []
        deadline = time.monotonic() + 10
        while (not seen or seen[-1] not in TERMINAL) and time.monotonic() < deadline:
            status = platform.catalog(batch_id)["status"]
            if not seen or seen[-1] != status:
                seen.append(status)
            time.sleep(0.02)

    assert seen == ["loading", "processing", "success"]


def test_dataset_is_described_with_its_xdm_schema(platform: Platform, dataset_id: str) -> None:
    response = platform.get(f"/data/foundation/catalog/dataSets/{dataset_id}")

    assert response.status_code == 200
    dataset = response.json()[dataset_id]
    assert dataset["name"] == "mixpanel_events"
    assert dataset["schemaRef"]["contentType"] == "application/vnd.adobe.xed+json;version=1"
    assert dataset["schemaRef"]["id"].startswith("https://ns.adobe.com/localsandbox/schemas/")
    assert len(dataset_id) == 24
    assert dataset_id == dataset_id.lower()
    only = platform.get(f"/data/foundation/catalog/dataSets/{dataset_id}", properties="name")
    assert only.json() == {dataset_id: {"name": "mixpanel_events"}}
    unknown = platform.get("/data/foundation/catalog/dataSets/000000000000000000000000")
    assert unknown.status_code == 404


def test_replay_replaces_its_predecessor_so_each_event_is_stored_once(
    emulator: PlatformEmulator, platform: Platform, dataset_id: str
) -> None:
    day = jsonl(event("a1"), event("a2"))
    first = platform.ingest(dataset_id, day, externalId="day-1")
    second = platform.ingest(
        dataset_id,
        day,
        externalId="day-1",
        replay={"predecessors": [f"${first['id']}"], "reason": "replace"},
    )
    third = platform.ingest(
        dataset_id,
        jsonl(event("a1"), event("a2"), event("a3")),
        externalId="day-1",
        replay={"predecessors": [f"${second['id']}"], "reason": "replace"},
    )

    assert third["status"] == "success"
    assert third["replay"] == {"predecessors": [f"${second['id']}"], "reason": "replace"}
    retired = platform.catalog(first["id"])
    assert retired["status"] == "inactive"
    assert retired["tags"]["acp_successor"] == [second["id"]]
    assert platform.catalog(second["id"])["tags"]["acp_successor"] == [third["id"]]
    records = emulator.dataset_records(dataset_id)
    assert sorted(records["_id"]) == ["a1", "a2", "a3"]
    assert set(records["batch_id"]) == {third["id"]}


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({"datasetId": "000000000000000000000000"}, "datasetId"),
        ({"inputFormat": {"format": "parquet"}}, "json"),
        ({"replay": {"predecessors": ["{first}"], "reason": "replace"}}, "prefixed"),
        ({"replay": {"predecessors": ["$01UNKNOWNBATCH"], "reason": "replace"}}, "not exist"),
        ({"replay": {"predecessors": ["${other}"], "reason": "replace"}}, "belongs to dataset"),
    ],
)
def test_batch_creation_refuses_bad_datasets_formats_and_predecessors(
    emulator: PlatformEmulator,
    platform: Platform,
    dataset_id: str,
    body: dict[str, Any],
    mentions: str,
) -> None:
    first = platform.create_batch(dataset_id)
    other = platform.create_batch(emulator.create_dataset("another"))
    request = {"datasetId": dataset_id, "inputFormat": {"format": "json"}, **body}
    if "replay" in body:
        request["replay"] = {
            "predecessors": [
                reference.format(first=first, other=other)
                for reference in body["replay"]["predecessors"]
            ],
            "reason": "replace",
        }

    response = platform.post_batch(request)

    assert response.status_code == 400
    assert response.json()["status"] == 400
    assert mentions in response.json()["detail"]
    assert len(emulator.batches(dataset_id)) == 1


INVALID_LINES = [
    orjson.dumps(event("null", web={"webPageDetails": {"name": None}})),
    orjson.dumps(event("country", placeContext={"geo": {"countryCode": "us"}})),
    orjson.dumps(event("epoch", timestamp="1793527200000")),
    orjson.dumps({key: value for key, value in event("x").items() if key != "_id"}),
    orjson.dumps(event("future", timestamp="2999-01-01T00:00:00Z")),
    b"this is not json",
]


def test_invalid_records_fail_the_batch_and_are_kept_as_failed_rows(
    emulator: PlatformEmulator, platform: Platform, dataset_id: str
) -> None:
    data = jsonl(event("good")) + b"\n".join(INVALID_LINES) + b"\n"

    batch = platform.ingest(dataset_id, data, enableErrorDiagnostics=True)

    assert batch["status"] == "failed"
    assert batch["failedRecordCount"] == 6
    assert batch["metrics"]["outputRecordCount"] == 0
    assert batch["recordCount"] == 7, "every processed record, the failed ones too"
    summary, *by_code = batch["errors"]
    assert summary["code"] == "INGEST-1212-400"
    assert summary["description"].startswith("Encountered 6 errors in the data.")
    assert summary["recordCount"] == 6
    assert {error["code"]: error["recordCount"] for error in by_code} == {
        "INGEST-1401-400": 1,
        "INGEST-1555-400": 2,
        "INGEST-1550-400": 3,
    }
    assert emulator.dataset_records(dataset_id).empty
    rows = platform.failed_rows(batch["id"])
    assert [row["_corrupt_record"].encode() for row in rows] == INVALID_LINES
    assert [row["_errors"][0]["code"] for row in rows] == [
        "1555",
        "1550",
        "1550",
        "1555",
        "1550",
        "1401",
    ]
    pointers = [
        {error["pointerToViolation"] for error in row["_validationErrors"]} for row in rows[:5]
    ]
    assert "#/web/webPageDetails/name" in pointers[0]
    assert pointers[1] == {"#/placeContext/geo/countryCode"}
    assert pointers[2] == {"#/timestamp"}
    assert pointers[3] == {"#"}
    assert pointers[4] == {"#/timestamp"}


def test_without_diagnostics_the_failed_batch_says_to_enable_them(
    platform: Platform, dataset_id: str
) -> None:
    batch = platform.ingest(dataset_id, jsonl(event("good"), event("bad", eventType="")))

    assert batch["status"] == "failed"
    assert [error["code"] for error in batch["errors"]] == ["INGEST-1211-400"]
    assert batch["errors"][0]["recordCount"] == 1


@pytest.mark.parametrize(("bad", "status"), [(1, "success"), (2, "failed")])
def test_partial_ingestion_accepts_failures_up_to_its_percentage(
    emulator: PlatformEmulator, platform: Platform, dataset_id: str, bad: int, status: str
) -> None:
    good = [event(f"good-{index}") for index in range(10 - bad)]
    broken = [event(f"bad-{index}", timestamp="yesterday") for index in range(bad)]

    batch = platform.ingest(dataset_id, jsonl(*good, *broken), partialIngestionPercent=10)

    assert batch["status"] == status
    assert batch["failedRecordCount"] == bad
    assert batch["tags"] == {"acp_partialIngestionPercent": ["10"]}
    assert batch["errors"][0]["code"] == "INGEST-1212-400"
    stored = emulator.dataset_records(dataset_id)
    assert len(stored) == (len(good) if status == "success" else 0)
    if status == "success":
        assert batch["recordCount"] == 10
        assert batch["errors"][0]["description"].startswith(
            f"Encountered {bad} errors in the data. Successfully ingested {len(good)} rows."
        )
    assert len(platform.failed_rows(batch["id"])) == bad


@pytest.mark.parametrize("data", [None, b"\n \n"])
def test_an_empty_batch_fails(platform: Platform, dataset_id: str, data: bytes | None) -> None:
    batch_id = platform.create_batch(dataset_id)
    if data is not None:
        platform.put_file(batch_id, dataset_id, "empty.json", data)

    platform.action(batch_id, "COMPLETE")
    batch = platform.wait(batch_id)

    assert batch["status"] == "failed"
    assert batch["errors"][0]["code"] == "106"
    assert "no" in batch["errors"][0]["description"]


def test_abort_stops_a_loading_batch_and_nothing_after_it(
    emulator: PlatformEmulator, platform: Platform, dataset_id: str
) -> None:
    batch_id = platform.create_batch(dataset_id)
    platform.put_file(batch_id, dataset_id, "a.json", jsonl(event("a1")))

    assert platform.action(batch_id, "ABORT").status_code == 200
    assert platform.catalog(batch_id)["status"] == "aborted"
    assert platform.action(batch_id, "ABORT").status_code == 200
    assert platform.put_file(batch_id, dataset_id, "b.json", b"{}").status_code == 400
    assert platform.action(batch_id, "COMPLETE").status_code == 400
    assert platform.action("01UNKNOWNBATCH", "ABORT").status_code == 404
    finished = platform.ingest(dataset_id, jsonl(event("a2")))
    refused = platform.action(finished["id"], "ABORT")
    assert refused.status_code == 400
    assert "no longer be aborted" in refused.json()["detail"]
    assert platform.catalog(finished["id"])["status"] == "success"
    assert list(emulator.dataset_records(dataset_id)["_id"]) == ["a2"]


def test_complete_can_be_retried_without_processing_twice(
    emulator: PlatformEmulator, platform: Platform, dataset_id: str
) -> None:
    batch_id = platform.create_batch(dataset_id)
    platform.put_file(batch_id, dataset_id, "a.json", jsonl(event("a1"), event("a2")))

    answers = [platform.action(batch_id, "COMPLETE").status_code for _ in range(3)]
    platform.wait(batch_id)
    answers.append(platform.action(batch_id, "COMPLETE").status_code)

    assert answers == [200, 200, 200, 200]
    assert platform.catalog(batch_id)["recordCount"] == 2
    assert len(emulator.dataset_records(dataset_id)) == 2
    late_upload = platform.put_file(batch_id, dataset_id, "b.json", jsonl(event("b")))
    assert late_upload.status_code == 400


def test_uploads_are_checked_for_batch_dataset_path_type_and_size(
    emulator: PlatformEmulator, platform: Platform, dataset_id: str
) -> None:
    batch_id = platform.create_batch(dataset_id)
    other_dataset = emulator.create_dataset("another")
    emulator.max_file_bytes = 1000

    assert platform.put_file("01UNKNOWNBATCH", dataset_id, "a.json", b"{}").status_code == 404
    assert platform.put_file(batch_id, other_dataset, "a.json", b"{}").status_code == 400
    assert (
        platform.put_file(batch_id, dataset_id, "a/%2E%2E/%2E%2E/x.json", b"{}").status_code == 400
    )
    wrong_type = platform.put_file(
        batch_id, dataset_id, "a.json", b"{}", **{"Content-Type": "text/plain"}
    )
    assert wrong_type.status_code == 415
    too_large = platform.put_file(batch_id, dataset_id, "a.json", b"x" * 1001)
    assert too_large.status_code == 413
    streamed = platform.put_file(batch_id, dataset_id, "a.json", iter([b"x" * 600] * 2))  # chunked
    assert streamed.status_code == 413
    assert platform.put_file(batch_id, dataset_id, "a.json", b"x" * 1000).status_code == 201
    assert platform.action(batch_id, "COMPLETE").status_code == 200


def test_batches_are_listed_by_dataset_external_id_and_status(
    emulator: PlatformEmulator, platform: Platform, dataset_id: str
) -> None:
    old = platform.ingest(dataset_id, jsonl(event("a1")), externalId="day-1")
    new = platform.create_batch(dataset_id, externalId="day-1")
    platform.create_batch(dataset_id, externalId="day-2")
    platform.create_batch(emulator.create_dataset("another"), externalId="day-1")

    def listing(**params: Any) -> list[str]:
        response = platform.get("/data/foundation/catalog/batches", **params)
        assert response.status_code == 200
        return list(response.json())

    assert listing(dataSet=dataset_id, externalId="day-1") == [old["id"], new]
    assert listing(dataSet=dataset_id, externalId="day-1", orderBy="desc:created", limit=1) == [new]
    assert listing(dataSet=dataset_id, status="success") == [old["id"]]
    assert len(listing(dataSet=dataset_id)) == 3
    assert len(listing()) == 4
    too_many = platform.get("/data/foundation/catalog/batches", limit=101)
    assert too_many.status_code == 400


def test_state_survives_a_restart_on_the_same_directory(tmp_path: Path) -> None:
    state_dir = tmp_path / "aep"
    with PlatformEmulator(state_dir, processing_seconds=0.02) as first:
        before = Platform(first)
        dataset_id = first.create_dataset("mixpanel_events")
        batch = before.ingest(dataset_id, jsonl(event("a1"), event("a2")), externalId="day-1")
        old_token = before.token()

    with PlatformEmulator(state_dir, processing_seconds=0.02) as second:
        after = Platform(second)
        stale = requests.get(
            f"{second.url}/data/foundation/catalog/batches/{batch['id']}",
            headers=after.headers(Authorization=f"Bearer {old_token}"),
        )
        assert stale.status_code == 401
        assert second.create_dataset("mixpanel_events") == dataset_id
        assert after.catalog(batch["id"]) == batch
        assert list(second.dataset_records(dataset_id)["_id"]) == ["a1", "a2"]
        replay = {"predecessors": [f"${batch['id']}"], "reason": "replace"}
        successor = after.ingest(dataset_id, jsonl(event("a1"), event("a2")), replay=replay)
        assert sorted(second.dataset_records(dataset_id)["_id"]) == ["a1", "a2"]
    assert (state_dir / "catalog.json").is_file()
    # The replaced batch's records are gone; the replay's are one folder of Parquet parts.
    parts = (state_dir / "datasets" / dataset_id).glob("*/*.parquet")
    assert [part.relative_to(part.parents[1]).as_posix() for part in parts] == [
        f"{successor['id']}/part-00000.parquet"
    ]


def test_a_batch_completed_before_a_stop_is_processed_after_the_restart(tmp_path: Path) -> None:
    with PlatformEmulator(tmp_path, processing_seconds=30) as slow:
        platform = Platform(slow)
        dataset_id = slow.create_dataset("events")
        batch_id = platform.create_batch(dataset_id)
        platform.put_file(batch_id, dataset_id, "a.json", jsonl(event("a1")))
        platform.action(batch_id, "COMPLETE")
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 5  # stop() interrupts the processing wait

    with PlatformEmulator(tmp_path, processing_seconds=0.02) as fast:
        assert Platform(fast).wait(batch_id)["status"] == "success"
        assert list(fast.dataset_records(dataset_id)["_id"]) == ["a1"]


def test_queued_faults_answer_the_next_matching_requests(
    emulator: PlatformEmulator, platform: Platform, dataset_id: str
) -> None:
    platform.token()
    emulator.queue_fault("post", BATCHES, 503, count=2, retry_after=7)
    body = {"datasetId": dataset_id, "inputFormat": {"format": "json"}}

    answers = [platform.post_batch(body) for _ in range(3)]

    assert [answer.status_code for answer in answers] == [503, 503, 201]
    assert answers[0].headers["Retry-After"] == "7"
    assert answers[0].json()["status"] == 503
    assert answers[0].json()["title"] == "Service Unavailable"
    assert [(entry.method, entry.path, entry.status) for entry in emulator.request_log[-3:]] == [
        ("POST", BATCHES, 503),
        ("POST", BATCHES, 503),
        ("POST", BATCHES, 201),
    ]
    assert len(emulator.batches(dataset_id)) == 1


def test_unknown_paths_answer_json_404(platform: Platform) -> None:
    response = platform.get("/data/foundation/nothing/here")

    assert response.status_code == 404
    assert response.json()["status"] == 404
    assert platform.get("/data/foundation/catalog/batches/01UNKNOWNBATCH").status_code == 404


REGISTRY = "/data/foundation/schemaregistry"
XED = "application/vnd.adobe.xed+json;version=1"
XED_FULL = "application/vnd.adobe.xed-full+json;version=1"
XED_ID = "application/vnd.adobe.xed-id+json"
EXPERIENCE_EVENT = "https://ns.adobe.com/xdm/context/experienceevent"
WEB_DETAILS = "https://ns.adobe.com/xdm/context/experienceevent-web"


def mixpanel_field_group(title: str = "Mixpanel fields", tenant: str = "_localsandbox") -> dict:
    fields = {
        "type": "object",
        "properties": {
            "mixpanel": {
                "type": "object",
                "properties": {"eventName": {"type": "string"}, "time": {"type": "number"}},
            }
        },
    }
    return {
        "title": title,
        "type": "object",
        "meta:intendedToExtend": [EXPERIENCE_EVENT],
        "definitions": {"mixpanel": {"properties": {tenant: fields}}},
        "allOf": [{"$ref": "#/definitions/mixpanel"}],
    }


def post(platform: Platform, api_path: str, body: Any, **headers: str) -> requests.Response:
    return platform.session.post(
        platform.url + api_path, json=body, headers=platform.headers(**headers)
    )


def get_with(platform: Platform, api_path: str, accept: str, **params: Any) -> requests.Response:
    return platform.session.get(
        platform.url + api_path, headers=platform.headers(Accept=accept), params=params
    )


def registered_schema(platform: Platform, title: str = "Mixpanel events") -> str:
    field_group = post(platform, f"{REGISTRY}/tenant/fieldgroups", mixpanel_field_group())
    assert field_group.status_code == 201, field_group.text
    schema = post(
        platform,
        f"{REGISTRY}/tenant/schemas",
        {
            "title": title,
            "type": "object",
            "allOf": [
                {"$ref": EXPERIENCE_EVENT},
                {"$ref": WEB_DETAILS},
                {"$ref": field_group.json()["$id"]},
            ],
        },
    )
    assert schema.status_code == 201, schema.text
    return schema.json()["$id"]


def test_the_schema_registry_composes_and_resolves_a_schema(platform: Platform) -> None:
    assert platform.get(f"{REGISTRY}/stats").json()["tenantId"] == "localsandbox"
    outside_tenant = post(
        platform, f"{REGISTRY}/tenant/fieldgroups", mixpanel_field_group(tenant="mixpanel")
    )
    assert outside_tenant.status_code == 400
    assert "_localsandbox" in outside_tenant.json()["detail"]
    schema_id = registered_schema(platform)
    again = post(platform, f"{REGISTRY}/tenant/fieldgroups", mixpanel_field_group())
    assert again.status_code == 409
    unknown_group = post(
        platform,
        f"{REGISTRY}/tenant/schemas",
        {"title": "x", "type": "object", "allOf": [{"$ref": EXPERIENCE_EVENT}, {"$ref": "y"}]},
    )
    assert unknown_group.status_code == 400
    assert "not a known field group" in unknown_group.json()["detail"]

    listing = get_with(
        platform, f"{REGISTRY}/tenant/schemas", XED_ID, property="title==Mixpanel events"
    )
    assert [item["$id"] for item in listing.json()["results"]] == [schema_id]
    assert set(listing.json()["results"][0]) == {"$id", "meta:altId", "version", "title"}
    address = f"{REGISTRY}/tenant/schemas/{requests.utils.quote(schema_id, safe='')}"
    assert get_with(platform, address, "application/vnd.adobe.xed-full+json").status_code == 406
    raw = get_with(platform, address, XED).json()
    assert [part["$ref"] for part in raw["allOf"]][:2] == [EXPERIENCE_EVENT, WEB_DETAILS]
    full = get_with(platform, address, XED_FULL).json()
    assert "allOf" not in full and "$ref" not in orjson.dumps(full).decode()
    assert full["required"] == ["_id", "timestamp"]
    fields = full["properties"]
    assert {"_id", "timestamp", "eventType", "identityMap", "web", "_localsandbox"} <= set(fields)
    assert "environment" not in fields, "only the field groups the schema names"
    assert fields["_localsandbox"]["properties"]["mixpanel"]["properties"]["time"] == {
        "type": "number"
    }
    url = fields["web"]["properties"]["webPageDetails"]["properties"]["URL"]
    assert url["type"] == "string"
    by_alt_id = get_with(platform, f"{REGISTRY}/tenant/schemas/{raw['meta:altId']}", XED_FULL)
    assert by_alt_id.json() == full


def test_identity_descriptors_need_a_string_field_and_a_namespace(platform: Platform) -> None:
    schema_id = registered_schema(platform)
    namespaces = "/data/core/idnamespace/identities"
    assert "ECID" in {item["code"] for item in platform.get(namespaces).json()}
    created = post(
        platform, namespaces, {"code": "MixpanelDistinctId", "name": "x", "idType": "Cross_device"}
    )
    assert created.status_code == 200 and created.json()["custom"] is True
    assert (
        post(
            platform, namespaces, {"code": "mixpaneldistinctid", "name": "y", "idType": "EMAIL"}
        ).status_code
        == 409
    )
    assert (
        post(platform, namespaces, {"code": "Other", "name": "y", "idType": "PERSON"}).status_code
        == 400
    )

    def descriptor(field: str, namespace: str = "MixpanelDistinctId") -> requests.Response:
        body = {
            "@type": "xdm:descriptorIdentity",
            "xdm:sourceSchema": schema_id,
            "xdm:sourceVersion": 1,
            "xdm:sourceProperty": field,
            "xdm:namespace": namespace,
            "xdm:property": "xdm:code",
            "xdm:isPrimary": True,
        }
        return post(platform, f"{REGISTRY}/tenant/descriptors", body)

    assert descriptor("/_localsandbox/mixpanel/time").status_code == 400  # a number
    assert descriptor("/_localsandbox/mixpanel/nothing").status_code == 400
    assert descriptor("/_localsandbox/mixpanel/eventName", "Nobody").status_code == 400
    made = descriptor("/_localsandbox/mixpanel/eventName")
    assert made.status_code == 201
    second = descriptor("/web/webPageDetails/URL", "Email")
    assert second.status_code == 400 and "one primary identity" in second.json()["detail"]
    listed = get_with(platform, f"{REGISTRY}/tenant/descriptors", "application/vnd.adobe.xdm+json")
    (stored,) = listed.json()["xdm:descriptorIdentity"]
    assert stored["@id"] == made.json()["@id"]
    assert stored["xdm:sourceProperty"] == "/_localsandbox/mixpanel/eventName"


def test_datasets_are_made_on_a_tenant_schema_and_found_by_name(platform: Platform) -> None:
    schema_id = registered_schema(platform)
    datasets = "/data/foundation/catalog/dataSets"
    unknown = post(
        platform, datasets, {"name": "events", "schemaRef": {"id": "nope", "contentType": XED}}
    )
    assert unknown.status_code == 400
    created = post(
        platform, datasets, {"name": "events*", "schemaRef": {"id": schema_id, "contentType": XED}}
    )
    assert created.status_code == 201
    (reference,) = created.json()
    dataset_id = reference.removeprefix("@/dataSets/")
    post(platform, datasets, {"name": "other", "schemaRef": {"id": schema_id, "contentType": XED}})

    assert list(platform.get(datasets, name="events**").json()) == [dataset_id]
    assert list(platform.get(datasets, name="ev*").json()) == [dataset_id]
    assert len(platform.get(datasets).json()) == 2
    view = platform.get(f"{datasets}/{dataset_id}").json()[dataset_id]
    assert view["schemaRef"] == {"id": schema_id, "contentType": XED}


def test_batches_are_found_by_tag_and_read_a_page_at_a_time(
    platform: Platform, dataset_id: str
) -> None:
    made = [
        platform.create_batch(dataset_id, tags={"day": [f"1/2026-11-0{index}"]})
        for index in (1, 1, 2)
    ]

    def listing(**params: Any) -> list[str]:
        response = platform.get("/data/foundation/catalog/batches", dataSet=dataset_id, **params)
        assert response.status_code == 200, response.text
        return list(response.json())

    assert listing(tags="day:1/2026-11-01") == made[:2]
    assert listing(tags="day:1/2026-11-*") == made
    assert listing(tags="day:*,missing:*") == []
    assert listing(tags="day:1/2026-11-01", orderBy="desc:created") == made[1::-1]
    assert listing(limit=2) + listing(limit=2, start=2) == made
    assert platform.get("/data/foundation/catalog/batches", tags="nocolon").status_code == 400


def test_a_loading_batch_nobody_completes_is_abandoned(tmp_path: Path) -> None:
    with PlatformEmulator(tmp_path, abandon_after_seconds=0.05) as emulator:
        platform = Platform(emulator)
        dataset_id = emulator.create_dataset("events")
        batch_id = platform.create_batch(dataset_id)
        time.sleep(0.1)

        batch = platform.catalog(batch_id)
        assert batch["status"] == "abandoned"
        assert "expected timeframe" in batch["errors"][0]["description"]
        assert (
            platform.put_file(batch_id, dataset_id, "a.json", jsonl(event("a"))).status_code == 400
        )
        assert platform.action(batch_id, "COMPLETE").status_code == 400
        assert platform.action(batch_id, "ABORT").status_code == 400


def test_queued_batch_faults_fail_a_batch_or_reject_some_rows(
    emulator: PlatformEmulator, platform: Platform, dataset_id: str
) -> None:
    emulator.fail_next_batch("INGEST-9999-500", "Internal processing failure.")
    emulator.reject_rows_of_next_batch(1)

    failed = platform.ingest(dataset_id, jsonl(event("a1")))
    partial = platform.ingest(
        dataset_id, jsonl(event("b1"), event("b2")), partialIngestionPercent=50
    )
    clean = platform.ingest(dataset_id, jsonl(event("c1")))

    assert failed["status"] == "failed"
    assert failed["errors"] == [
        {"code": "INGEST-9999-500", "description": "Internal processing failure."}
    ]
    assert (partial["status"], partial["recordCount"], partial["failedRecordCount"]) == (
        "success",
        2,
        1,
    )
    (row,) = platform.failed_rows(partial["id"])
    assert orjson.loads(row["_corrupt_record"])["_id"] == "b1"
    assert "fault" in row["_validationErrors"][0]["message"]
    assert clean["status"] == "success"
    assert sorted(emulator.dataset_records(dataset_id)["_id"]) == ["b2", "c1"]


def test_a_fault_after_handling_loses_only_the_answer(
    emulator: PlatformEmulator, platform: Platform, dataset_id: str
) -> None:
    platform.token()
    emulator.queue_fault("POST", BATCHES, 502, after_handling=True)

    answer = platform.post_batch({"datasetId": dataset_id, "inputFormat": {"format": "json"}})

    assert answer.status_code == 502
    (made,) = emulator.batches(dataset_id)
    assert made["status"] == "loading"


def _big_batch_files() -> dict[str, bytes]:
    """Three files of valid and invalid rows, blank lines, CRLF endings and one line longer than
    a slice: enough bytes for many slices once the parallel threshold is lowered."""
    first = b"".join(
        orjson.dumps(event(f"a{index}")) + (b"\r\n" if index % 7 else b"\n\n")
        for index in range(60)
    )
    second = b"\n".join(INVALID_LINES[:3]) + b"\n"
    second += jsonl(event("long", _localsandbox={"mixpanel": {"eventName": "x" * 5000}}))
    second += jsonl(*(event(f"b{index}") for index in range(40)))
    third = jsonl(*(event(f"c{index}") for index in range(30))) + b"\n".join(INVALID_LINES[3:])
    return {"day/part-0.json": first, "day/part-1.json": second, "day/part-2.json": third}


def _ingest_files(
    emulator: PlatformEmulator, state_dir: Path, files: dict[str, bytes], **fields: Any
) -> dict[str, Any]:
    """One batch of ``files`` through the emulator on ``state_dir``: what became of it."""
    platform = Platform(emulator)
    dataset_id = emulator.create_dataset("mixpanel_events")
    batch_id = platform.create_batch(dataset_id, **fields)
    for name, data in files.items():
        assert platform.put_file(batch_id, dataset_id, name, data).status_code == 201
    assert platform.action(batch_id, "COMPLETE").status_code == 200
    batch = platform.wait(batch_id)
    return {
        "batch": batch,
        "records": emulator.dataset_records(dataset_id),
        "failed_rows": platform.failed_rows(batch_id),
        "parts": list((state_dir / "datasets" / dataset_id / batch_id).iterdir()),
    }


def test_a_big_batch_is_validated_by_worker_processes_as_one_pass_would(tmp_path: Path) -> None:
    files = _big_batch_files()
    fields = {"enableErrorDiagnostics": True, "partialIngestionPercent": 10}
    with PlatformEmulator(tmp_path / "serial", processing_seconds=0.02) as serial:
        one_pass = _ingest_files(serial, tmp_path / "serial", files, **fields)
    # Slices of 2,000 bytes: about ten per file, and the long line alone in one.
    with PlatformEmulator(
        tmp_path / "parallel", processing_seconds=0.02, parallel_min_bytes=8000
    ) as parallel:
        workers = _ingest_files(parallel, tmp_path / "parallel", files, **fields)

    assert len(one_pass["parts"]) == 1
    # A file without a bad line is one part, validated as it was uploaded; the others are
    # validated again in slices at processing time, their failed rows in order.
    assert len(workers["parts"]) > len(files)
    batch = workers["batch"]
    assert (batch["status"], batch["recordCount"], batch["failedRecordCount"]) == (
        "success",
        137,
        6,
    )
    for key in ("status", "recordCount", "failedRecordCount", "metrics", "errors"):
        assert batch[key] == one_pass["batch"][key], key
    assert [error["code"] for error in batch["errors"]] == [
        "INGEST-1212-400",
        "INGEST-1401-400",
        "INGEST-1555-400",
        "INGEST-1550-400",
    ]
    records, expected = workers["records"], one_pass["records"]
    assert list(records["_id"][:3]) == ["a0", "a1", "a2"]
    assert records["_id"].iloc[-1] == "c29"
    assert set(records["batch_id"]) == {batch["id"]}
    assert records.drop(columns="batch_id").equals(expected.drop(columns="batch_id"))
    assert workers["failed_rows"] == one_pass["failed_rows"]
    assert [row["_corrupt_record"].encode() for row in workers["failed_rows"]] == INVALID_LINES


def test_a_queued_row_rejection_takes_the_first_valid_rows_of_a_big_batch(
    tmp_path: Path,
) -> None:
    with PlatformEmulator(
        tmp_path / "aep", processing_seconds=0.02, parallel_min_bytes=8000
    ) as emulator:
        emulator.reject_rows_of_next_batch(3)
        ingested = _ingest_files(
            emulator, tmp_path / "aep", _big_batch_files(), partialIngestionPercent=10
        )

    assert ingested["batch"]["failedRecordCount"] == 9
    rejected, invalid = ingested["failed_rows"][:3], ingested["failed_rows"][3:]
    assert [orjson.loads(row["_corrupt_record"])["_id"] for row in rejected] == ["a0", "a1", "a2"]
    assert all("fault" in row["_validationErrors"][0]["message"] for row in rejected)
    assert [row["_corrupt_record"].encode() for row in invalid] == INVALID_LINES
    assert list(ingested["records"]["_id"][:2]) == ["a3", "a4"]
    assert len(ingested["records"]) == 128


def test_records_stored_as_one_file_per_batch_are_read_after_an_upgrade(tmp_path: Path) -> None:
    with PlatformEmulator(tmp_path, processing_seconds=0.02) as before:
        dataset_id = before.create_dataset("events")
        batch = Platform(before).ingest(dataset_id, jsonl(event("a1"), event("a2")))
    # The layout of emulators before a batch's records became a folder of parts.
    folder = tmp_path / "datasets" / dataset_id / batch["id"]
    (folder / "part-00000.parquet").rename(folder.with_name(f"{batch['id']}.parquet"))
    folder.rmdir()

    with PlatformEmulator(tmp_path, processing_seconds=0.02) as after:
        assert list(after.dataset_records(dataset_id)["_id"]) == ["a1", "a2"]
        replay = {"predecessors": [f"${batch['id']}"], "reason": "replace"}
        Platform(after).ingest(dataset_id, jsonl(event("a3")), replay=replay)
        assert list(after.dataset_records(dataset_id)["_id"]) == ["a3"]
    assert not folder.exists()


def test_records_are_judged_by_the_datasets_own_schema(platform: Platform) -> None:
    strict_fields = {
        "title": "Scores",
        "type": "object",
        "meta:intendedToExtend": [EXPERIENCE_EVENT],
        "definitions": {
            "scores": {
                "properties": {
                    "_localsandbox": {
                        "type": "object",
                        "properties": {
                            "score": {"type": "integer", "minimum": 0},
                            "level": {"type": "string", "enum": ["low", "high"]},
                        },
                        "required": ["score"],
                    }
                }
            }
        },
        "allOf": [{"$ref": "#/definitions/scores"}],
    }
    field_group = post(platform, f"{REGISTRY}/tenant/fieldgroups", strict_fields)
    assert field_group.status_code == 201, field_group.text
    refs = [{"$ref": EXPERIENCE_EVENT}, {"$ref": field_group.json()["$id"]}]
    schema = post(
        platform, f"{REGISTRY}/tenant/schemas", {"title": "S", "type": "object", "allOf": refs}
    )
    dataset = post(
        platform,
        "/data/foundation/catalog/dataSets",
        {"name": "scores", "schemaRef": {"id": schema.json()["$id"], "contentType": XED}},
    )
    dataset_id = dataset.json()[0].rsplit("/", 1)[-1]
    records = [
        event("fits", _localsandbox={"score": 3, "level": "high"}),
        event("text", _localsandbox={"score": "3"}),
        event("negative", _localsandbox={"score": -1}),
        event("missing", _localsandbox={"level": "high"}),
        event("off-list", _localsandbox={"score": 1, "level": "medium"}),
        event("empty", _localsandbox={"score": 1}, extra={"deep": [{}]}),
    ]

    batch = platform.ingest(dataset_id, jsonl(*records), partialIngestionPercent=90)

    assert (batch["status"], batch["failedRecordCount"]) == ("success", 5)
    rows = {
        orjson.loads(row["_corrupt_record"])["_id"]: row
        for row in platform.failed_rows(batch["id"])
    }
    verdicts = {
        record_id: {
            (error["code"], error["pointerToViolation"]) for error in row["_validationErrors"]
        }
        for record_id, row in rows.items()
    }
    assert verdicts == {
        "text": {("1550", "#/_localsandbox/score")},
        "negative": {("1550", "#/_localsandbox/score")},
        "missing": {("1555", "#/_localsandbox")},
        "off-list": {("1550", "#/_localsandbox/level")},
        "empty": {("1555", "#/extra/deep/0")},
    }


def test_the_local_platform_never_imports_the_mapping() -> None:
    code = (
        "import sys, mixpanel_assets.sandbox.platform_emulator, "
        "mixpanel_assets.sandbox.batch_validation; "
        "print(sorted(m for m in sys.modules if m.startswith('mixpanel_assets.xdm')))"
    )
    imported = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert imported.strip() == "[]"


def test_files_validated_as_they_arrive_are_judged_again_when_they_changed(
    tmp_path: Path,
) -> None:
    """A big file is validated as soon as it is uploaded; what stands at processing time is the
    file as it is then, judged with the processing's clock."""
    soon = datetime.now(UTC) + timedelta(seconds=2)
    almost_due = event("soon", timestamp=soon.isoformat(timespec="milliseconds"))
    valid = jsonl(*(event(f"v{index}") for index in range(40)))
    with PlatformEmulator(
        tmp_path / "aep", processing_seconds=0.02, parallel_min_bytes=8000
    ) as emulator:
        platform = Platform(emulator)
        dataset_id = emulator.create_dataset("events")
        batch_id = platform.create_batch(
            dataset_id, enableErrorDiagnostics=True, partialIngestionPercent=10
        )
        files = {
            "valid.json": valid,  # validated early, taken as one part
            "replaced.json": valid,  # validated early, then replaced by a file with a bad row
            "soon.json": valid + jsonl(almost_due),  # refused early: then in the future
        }
        for name, data in files.items():
            assert platform.put_file(batch_id, dataset_id, name, data).status_code == 201
        for _, judged, _ in emulator._early_validations()[batch_id]._files.values():
            judged.result()  # the first upload of each is judged before "replaced" is replaced
        broken = jsonl(event("r0"), event("r1", eventType=7))
        assert platform.put_file(batch_id, dataset_id, "replaced.json", broken).status_code == 200
        time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds() + 0.5))
        assert platform.action(batch_id, "COMPLETE").status_code == 200
        batch = platform.wait(batch_id)
        failed = platform.failed_rows(batch_id)
        parts = sorted((tmp_path / "aep" / "datasets" / dataset_id / batch_id).iterdir())

    assert batch["status"] == "success" and batch["failedRecordCount"] == 1
    assert [orjson.loads(row["_corrupt_record"])["_id"] for row in failed] == ["r1"]
    assert batch["metrics"]["inputRecordCount"] == 40 + 2 + 41
    assert batch["metrics"]["outputRecordCount"] == 40 + 1 + 41  # "soon" is in the past now
    # Slices for the replaced file and the one with a row refused early; one part for the valid.
    assert len(parts) > 3
