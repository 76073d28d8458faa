"""The day's records checked against the target dataset's own schema, read from the platform,
unless it is the schema the mapping proved them against."""

import gzip
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from dagster import instance_for_test, materialize

from mixpanel_assets.aep import target_schema
from mixpanel_assets.aep.client import AEPClient
from mixpanel_assets.aep.provisioning import ProvisioningSpec, provision
from mixpanel_assets.aep.target_schema import SchemaMismatchError, closed, read_target_schema
from mixpanel_assets.pipeline import build_definitions
from mixpanel_assets.sandbox.local_sandbox import CLIENT_SECRET, TENANT_ID, LocalSandbox
from mixpanel_assets.sandbox.platform_emulator import PlatformEmulator
from mixpanel_assets.xdm.mapping import MappingSpec
from mixpanel_assets.xdm.schema import CLASS_ID, tenant_field_group, xdm_validator
from mixpanel_assets.xdm.schema_fingerprint import composed, fingerprint, proved_fingerprint
from mixpanel_assets.xdm.spec import load_rules
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


def test_the_schema_the_mapping_proves_against_is_told_from_others(
    platform: PlatformEmulator, client: AEPClient
) -> None:
    proved = proved_fingerprint(MappingSpec(project_id="1", tenant_id=TENANT))
    assert proved is not None
    # The local platform's dataset: made from the same class and field groups, composed by the
    # registry (xed-full) with its own code, annotations and registry members of its own.
    same = read_target_schema(client, platform.create_dataset("events"), xdm_validator(TENANT))
    assert same.proven_by(proved)
    # A schema without the tenant's field group, and one from another tenant: not the same.
    web_only = client.create_tenant_resource(
        "schemas",
        {
            "title": "Web",
            "description": "web only",
            "type": "object",
            "allOf": [{"$ref": CLASS_ID}, {"$ref": WEB_DETAILS}],
        },
    )
    other = read_target_schema(
        client, client.create_dataset("web", web_only["$id"], ""), xdm_validator(TENANT)
    )
    assert other.fingerprint is not None and not other.proven_by(proved)
    assert not same.proven_by(proved_fingerprint(MappingSpec(project_id="1", tenant_id="other")))
    assert not same.proven_by(None)


def test_a_retyped_field_changes_the_fingerprint() -> None:
    validator = xdm_validator(TENANT)
    resolver = validator._resolver
    form = composed(validator.schema, resolver)
    assert fingerprint(form) == fingerprint(validator.schema, resolver)
    form["properties"]["eventType"]["type"] = "integer"
    assert fingerprint(form) != fingerprint(validator.schema, resolver)
    assert fingerprint({"allOf": [{"type": "string"}, {"type": "number"}]}) is None


def _day_run_messages(day: str) -> list[str]:
    defs = build_definitions()
    with instance_for_test() as instance:
        result = materialize(
            [*defs.assets, *defs.asset_checks],
            partition_key=day,
            instance=instance,
            resources=defs.resources,
        )
        assert result.success
        return [entry.user_message for entry in instance.all_logs(result.run_id)]


def test_a_day_is_checked_again_only_against_a_schema_its_mapping_did_not_prove(
    sandbox: LocalSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    messages = _day_run_messages(day)
    assert any("records are not checked against it again" in text for text in messages)
    assert not any(text.startswith("target schema:") for text in messages)

    # A dataset whose schema also has a field the mapping never writes: the records fit it, but
    # the mapping's proof is not about it, so each is checked.
    spec = ProvisioningSpec.for_mapping(
        TENANT_ID,
        load_rules(""),
        dataset_name="wider events",
        schema_title="Wider events",
        field_group_title="Wider fields",
    )
    wider = replace(spec, tenant_fields=tenant_field_group(TENANT_ID, ((("note",), "string"),)))
    client = emulator_client(sandbox.platform, CLIENT_SECRET)
    monkeypatch.setenv("AEP_DATASET_ID", provision(client, wider).dataset_id)
    messages = _day_run_messages(day)
    assert not any("not checked against it again" in text for text in messages)
    checked = next(text for text in messages if text.startswith("target schema: all"))
    assert re.fullmatch(r"target schema: all [1-9]\d* records fit", checked), checked


def test_a_long_check_reports_the_records_checked_so_far(
    platform: PlatformEmulator, client: AEPClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(target_schema, "PROGRESS_SECONDS", 0.0)  # a report at every chance
    target = read_target_schema(client, platform.create_dataset("events"), xdm_validator(TENANT))
    reports: list[int] = []
    records = [_record(index) for index in range(2500)]
    assert target.check_records(_day(tmp_path / "d.gz", records), reports.append) == 2500
    assert reports == [1024, 2048]
