"""The clients and the local platform against the vendors' own API documents.

The recorder (loaded for every test) checks each exchange; here: that it catches what breaks a
document, that a day's load and provisioning exercise every operation the project uses, and
that the local platform, driven by requests generated from the documents (schemathesis), never
fails and answers as documented.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import orjson
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from mixpanel_assets.aep.client import AEPClient
from mixpanel_assets.aep.day_batch import DayBatchRequest, load_day
from mixpanel_assets.aep.provisioning import ProvisioningSpec, provision
from mixpanel_assets.aep.replay import settle_day
from mixpanel_assets.mixpanel.export_client import ExportQuery, MixpanelExportClient
from mixpanel_assets.sandbox.mixpanel_emulator import MixpanelEmulator
from mixpanel_assets.sandbox.platform_emulator import PlatformEmulator
from mixpanel_assets.xdm.spec import default_rules
from tests.contract.documents import document_for, documents
from tests.contract.recorder import ContractRecorder
from tests.platform_clients import emulator_client

SECRET = "contract-s3cret"
TENANT = "acme"
DAY_TAGS = {"mixpanelAssetsPartition": "1/2026-11-01"}
# Every operation the project's AEP client calls: (document, method, path pattern).
OPERATIONS_WE_USE = {
    ("batch-ingestion", "POST", r"/data/foundation/import/batches"),
    ("batch-ingestion", "PUT", r"/data/foundation/import/batches/[^/]+/datasets/[^/]+/files/.+"),
    ("batch-ingestion", "POST", r"/data/foundation/import/batches/[^/]+"),
    ("catalog", "GET", r"/data/foundation/catalog/batches"),
    ("catalog", "GET", r"/data/foundation/catalog/batches/[^/]+"),
    ("catalog", "GET", r"/data/foundation/catalog/dataSets"),
    ("catalog", "POST", r"/data/foundation/catalog/dataSets"),
    ("catalog", "GET", r"/data/foundation/catalog/dataSets/[^/]+"),
    ("schema-registry", "GET", r"/data/foundation/schemaregistry/stats"),
    ("schema-registry", "GET", r"/data/foundation/schemaregistry/tenant/(fieldgroups|schemas)"),
    ("schema-registry", "POST", r"/data/foundation/schemaregistry/tenant/(fieldgroups|schemas)"),
    ("schema-registry", "GET", r"/data/foundation/schemaregistry/tenant/schemas/[^/]+"),
    ("schema-registry", "GET", r"/data/foundation/schemaregistry/tenant/descriptors"),
    ("schema-registry", "POST", r"/data/foundation/schemaregistry/tenant/descriptors"),
    ("identity-service", "GET", r"/data/core/idnamespace/identities"),
    ("identity-service", "POST", r"/data/core/idnamespace/identities"),
}


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[PlatformEmulator]:
    with PlatformEmulator(
        tmp_path / "platform", client_secret=SECRET, tenant_id=TENANT, processing_seconds=0.02
    ) as running:
        yield running


@pytest.fixture
def client(platform: PlatformEmulator) -> AEPClient:
    return emulator_client(platform, SECRET, retry_base_seconds=0.01)


def _headers(client: AEPClient) -> dict[str, str]:
    return client._headers()  # the four headers every platform call carries


def test_a_request_of_ours_that_breaks_a_document_is_reported(
    platform: PlatformEmulator, client: AEPClient
) -> None:
    recorder = ContractRecorder()
    headers = {key: value for key, value in _headers(client).items() if key != "x-sandbox-name"}
    request = requests.Request(
        "POST",
        platform.url + "/data/foundation/import/batches",
        json={"datasetId": 42, "inputFormat": {"format": "xml"}},
        headers=headers,
    ).prepare()
    response = requests.Session().send(request)

    exchange = recorder.check(request, response, ours=True)

    assert exchange is not None and exchange.document == "batch-ingestion"
    (problem,) = exchange.problems
    assert problem.startswith("request POST /data/foundation/import/batches (batch-ingestion)")
    assert "x-sandbox-name" in problem


def test_an_answer_that_breaks_a_document_is_reported(
    platform: PlatformEmulator, client: AEPClient
) -> None:
    dataset = platform.create_dataset("events")
    recorder = ContractRecorder()
    request = requests.Request(
        "GET",
        f"{platform.url}/data/foundation/catalog/batches",
        params={"dataSet": dataset},
        headers=_headers(client),
    ).prepare()
    response = requests.Session().send(request)
    assert recorder.check(request, response, ours=True).problems == []

    response._content = orjson.dumps({"b1": {"status": "finished", "tags": {"a": "b"}}})
    (problem,) = recorder.check(request, response, ours=True).problems
    assert problem.startswith("answer 200 to GET /data/foundation/catalog/batches (catalog)")
    assert "b1/status: 'finished' is not one of" in problem
    assert "b1/tags/a: 'b' is not of type 'array'" in problem


def test_a_day_and_provisioning_use_only_documented_calls_and_every_one_is_checked(
    platform: PlatformEmulator,
    client: AEPClient,
    contract_recorder: ContractRecorder,
    tmp_path: Path,
) -> None:
    provisioned = provision(client, ProvisioningSpec.for_mapping(TENANT, default_rules()))
    records = tmp_path / "records.gz"
    with gzip.open(records, "wb") as out:
        for index in range(30):
            record = {
                "_id": f"id{index}",
                "timestamp": "2026-11-01T10:00:00Z",
                "eventType": "web.webpagedetails.pageViews",
                "identityMap": {"MixpanelDistinctId": [{"id": f"u{index}", "primary": True}]},
                f"_{TENANT}": {"mixpanel": {"eventName": "x", "distinctId": f"u{index}"}},
            }
            out.write(orjson.dumps(record) + b"\n")
    request = DayBatchRequest(
        dataset_id=provisioned.dataset_id,
        external_id="contract-day",
        tags={name: [value] for name, value in DAY_TAGS.items()},
        predecessors=[],
        max_file_bytes=2_000,
        partial_ingestion_percent=0.0,
        timeout_seconds=30.0,
        poll_seconds=0.02,
    )
    first = load_day(client, records, request, tmp_path)
    settled = settle_day(
        client,
        dataset_id=provisioned.dataset_id,
        tags=DAY_TAGS,
        known_batch_ids=[first.batch_id],
        timeout_seconds=30,
        poll_seconds=0.02,
    )
    load_day(
        client,
        records,
        DayBatchRequest(**{**vars(request), "predecessors": settled.live}),
        tmp_path,
    )
    client.get_dataset(provisioned.dataset_id)
    client.get_schema(provisioned.schema_id)

    ours = [exchange for exchange in contract_recorder.exchanges if exchange.ours]
    used = {
        operation
        for operation in OPERATIONS_WE_USE
        for exchange in ours
        if (exchange.document, exchange.method) == operation[:2]
        and re.fullmatch(operation[2], exchange.path)
    }
    assert used == OPERATIONS_WE_USE
    assert all(document_for(exchange.path) is not None for exchange in ours)
    assert contract_recorder.problems == []


# The operations the project uses, by document: the local platform is driven on each.
_DRIVEN = {
    "catalog": [
        ("GET", "/batches"),
        ("GET", "/batches/{BATCH_ID}"),
        ("GET", "/dataSets"),
        ("GET", "/dataSets/{DATASET_ID}"),
        ("POST", "/dataSets"),
    ],
    "batch-ingestion": [
        ("POST", "/batches"),
        ("POST", "/batches/{batchId}"),
        ("PUT", "/batches/{batchId}/datasets/{datasetId}/files/{filePath}"),
    ],
    "schema-registry": [
        ("GET", "/stats"),
        ("GET", "/tenant/schemas"),
        ("GET", "/tenant/fieldgroups"),
        ("GET", "/tenant/schemas/{SCHEMA_ID}"),
        ("GET", "/tenant/descriptors"),
        ("POST", "/tenant/descriptors"),
    ],
    "identity-service": [("GET", "/idnamespace/identities"), ("POST", "/idnamespace/identities")],
}


# Accept headers the registry requires: a generated one would only ever meet a 406.
_ACCEPT = {
    ("schema-registry", "/tenant/schemas"): {"Accept": "application/vnd.adobe.xed-id+json"},
    ("schema-registry", "/tenant/fieldgroups"): {"Accept": "application/vnd.adobe.xed-id+json"},
    ("schema-registry", "/tenant/schemas/{SCHEMA_ID}"): {
        "Accept": "application/vnd.adobe.xed-full+json;version=1"
    },
    ("schema-registry", "/tenant/descriptors"): {"Accept": "application/vnd.adobe.xdm-v2+json"},
}


@pytest.mark.parametrize(
    ("name", "method", "path"),
    [(name, method, path) for name, operations in _DRIVEN.items() for method, path in operations],
)
def test_the_local_platform_answers_generated_requests_as_documented(
    platform: PlatformEmulator, client: AEPClient, name: str, method: str, path: str
) -> None:
    (document,) = [item for item in documents() if item.name == name]
    schema = schemathesis.openapi.from_dict(document.spec)
    operation = schema[path][method]
    dataset = platform.create_dataset("events")
    headers = {**_headers(client), **_ACCEPT.get((name, path), {})}
    base_url = platform.url + document.base_path

    @settings(
        max_examples=25,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def answers_as_documented(case: schemathesis.Case) -> None:
        # Valid credentials: the generated ones would only ever meet a 401.
        case.headers = {**(case.headers or {}), **headers}
        if (name, method, path) == ("batch-ingestion", "POST", "/batches") and isinstance(
            case.body, dict
        ):
            # What the local platform reads (JSON lines, one dataset): else every batch would be
            # refused, and no answer to a created batch checked.
            case.body["datasetId"] = dataset
            case.body["inputFormat"] = {"format": "json"}
        response = case.call(base_url=base_url)
        case.validate_response(
            response,
            checks=[not_a_server_error, content_type_conformance, response_schema_conformance],
        )

    answers_as_documented()


def test_the_export_client_and_the_mixpanel_emulator_keep_to_mixpanels_document(
    contract_recorder: ContractRecorder, tmp_path: Path
) -> None:
    day = date(2026, 11, 9)
    with MixpanelEmulator(
        username="contract-user",
        secret="contract-secret",
        events_per_day=40,
        today=lambda: date(2026, 11, 10),
    ) as mixpanel:
        client = MixpanelExportClient(
            project_id=mixpanel.project_id,
            username="contract-user",
            secret="contract-secret",
            export_url=mixpanel.export_url,
            retry_base_seconds=0.01,
        )
        summary = client.export_to_file(
            ExportQuery(from_date=day, to_date=day, time_in_ms=True), tmp_path / "day.gz"
        )
        # The whole answer (the client streams it, so only its head was checked above).
        whole = requests.get(
            mixpanel.export_url,
            params={"project_id": mixpanel.project_id, "from_date": str(day), "to_date": str(day)},
            auth=("contract-user", "contract-secret"),
            timeout=10,
        )

    exports = [e for e in contract_recorder.exchanges if e.document == "mixpanel-export"]
    assert [(e.ours, e.status) for e in exports] == [(True, 200), (False, 200)]
    assert contract_recorder.problems == []
    lines = whole.content.splitlines()
    assert summary.line_count == len(lines) > 0
    assert all(set(orjson.loads(line)) == {"event", "properties"} for line in lines)
