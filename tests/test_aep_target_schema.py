"""The day's records checked against the target dataset's own schema, read from the platform."""

import gzip
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from mixpanel_assets.aep.client import AEPClient
from mixpanel_assets.aep.target_schema import SchemaMismatchError, closed, read_target_schema
from mixpanel_assets.sandbox.platform_emulator import PlatformEmulator
from mixpanel_assets.xdm.schema import CLASS_ID, xdm_validator
from tests.platform_clients import emulator_client

TENANT = "acme"
WEB_DETAILS = "https://ns.adobe.com/xdm/context/experienceevent-web"


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[PlatformEmulator]:
    with PlatformEmulator(tmp_path / "platform", tenant_id=TENANT) as running:
        yield running


@pytest.fixture
def client(platform: PlatformEmulator) -> AEPClient:
    return emulator_client(platform, "local-sandbox-client-secret")


def _record(index: int, **changes: object) -> dict:
    record = {
        "_id": f"id{index}",
        "timestamp": "2026-11-01T10:00:00.000Z",
        "eventType": "web.webpagedetails.pageViews",
        "identityMap": {"MixpanelDistinctId": [{"id": f"u{index}", "primary": True}]},
        "web": {"webPageDetails": {"URL": "https://example.com/"}},
        f"_{TENANT}": {"mixpanel": {"eventName": "$mp_web_page_view", "time": 1793527200}},
    }
    return {**record, **changes}


def _day(path: Path, records: list[dict]) -> Path:
    with gzip.open(path, "wb") as out:
        out.writelines(orjson.dumps(record) + b"\n" for record in records)
    return path


def test_records_that_fit_the_dataset_schema_pass(
    platform: PlatformEmulator, client: AEPClient, tmp_path: Path
) -> None:
    dataset = platform.create_dataset("events")
    target = read_target_schema(client, dataset, xdm_validator(TENANT))
    assert target.schema_id == client.get_dataset(dataset)["schemaRef"]["id"]
    assert target.check_records(_day(tmp_path / "d.gz", [_record(i) for i in range(3)])) == 3


def test_a_field_the_dataset_schema_lacks_is_named(client: AEPClient, tmp_path: Path) -> None:
    # A schema someone composed without the tenant field group.
    schema = client.create_tenant_resource(
        "schemas",
        {
            "title": "Web events",
            "description": "composed by hand",
            "type": "object",
            "allOf": [{"$ref": CLASS_ID}, {"$ref": WEB_DETAILS}],
        },
    )
    dataset = client.create_dataset("web events", schema["$id"], "")
    target = read_target_schema(client, dataset, xdm_validator(TENANT))
    with pytest.raises(SchemaMismatchError) as raised:
        target.check_records(_day(tmp_path / "d.gz", [_record(1), _record(2)]))
    message = str(raised.value)
    assert message.startswith("record 1 of the day (_id id1) does not fit the schema of dataset")
    assert f"_{TENANT}: not a field of the dataset's schema" in message
    assert schema["$id"] in message and "mixpanel_assets.aep.provision" in message


def test_the_first_record_that_breaks_the_schema_is_named_with_each_problem(
    platform: PlatformEmulator, client: AEPClient, tmp_path: Path
) -> None:
    dataset = platform.create_dataset("events")
    target = read_target_schema(client, dataset, xdm_validator(TENANT))
    broken = _record(
        2,
        web={"webPageDetail": {"URL": "https://example.com/"}},
        timestamp="2026-11-01 10:00",
        **{f"_{TENANT}": {"mixpanel": {"eventName": "x", "time": "noon"}}},
    )
    records = [_record(1), broken, _record(3, eventType=7)]
    with pytest.raises(SchemaMismatchError) as raised:
        target.check_records(_day(tmp_path / "d.gz", records))
    message = str(raised.value)
    assert "record 2 of the day (_id id2)" in message
    assert "web.webPageDetail: not a field of the dataset's schema" in message
    assert f"_{TENANT}.mixpanel.time: 'noon' is not of type 'number'" in message
    assert "timestamp: '2026-11-01 10:00' is not a 'date-time'" in message
    assert "eventType" not in message, "record 3 is never reached"


def test_maps_and_composed_objects_stay_open_when_a_schema_is_closed() -> None:
    schema = {
        "type": "object",
        "properties": {
            "identityMap": {"type": "object", "additionalProperties": {"type": "array"}},
            "either": {"anyOf": [{"properties": {"a": {}}}], "properties": {"b": {}}},
            "web": {"type": "object", "properties": {"URL": {"type": "string"}}},
        },
    }
    result = closed(schema)
    assert result["additionalProperties"] is False
    fields = result["properties"]
    assert fields["identityMap"]["additionalProperties"] == {"type": "array"}
    assert "additionalProperties" not in fields["either"]
    assert fields["either"]["anyOf"][0]["additionalProperties"] is False
    assert fields["web"]["additionalProperties"] is False
    assert "additionalProperties" not in schema, "the input is left as it was"
