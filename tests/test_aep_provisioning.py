"""Provisioning the schema and dataset as code, against an empty platform emulator."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from mixpanel_assets.aep import provision as command
from mixpanel_assets.aep.client import XED_FULL, AEPClient
from mixpanel_assets.aep.provisioning import (
    SCHEMA_TITLE,
    ProvisioningError,
    ProvisioningSpec,
    provision,
)
from mixpanel_assets.sandbox.platform_emulator import PlatformEmulator
from mixpanel_assets.xdm.schema import CLASS_ID
from mixpanel_assets.xdm.spec import default_rules
from tests.platform_clients import emulator_client

TENANT = "acme"
SECRET = "provisioning-s3cret"


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[PlatformEmulator]:
    with PlatformEmulator(tmp_path / "platform", tenant_id=TENANT, client_secret=SECRET) as running:
        yield running


@pytest.fixture
def client(platform: PlatformEmulator) -> AEPClient:
    return emulator_client(platform, SECRET)


def _writes(platform: PlatformEmulator) -> list[str]:
    return [entry.path for entry in platform.request_log if entry.method in ("POST", "PUT")]


def test_an_empty_platform_gets_schema_and_dataset_and_a_second_run_changes_nothing(
    platform: PlatformEmulator, client: AEPClient
) -> None:
    spec = ProvisioningSpec.for_mapping(TENANT, default_rules())

    first = provision(client, spec)

    assert first.created == [what for what, _ in first.steps], "everything was missing"
    assert len(first.steps) == 7
    dataset = client.get_dataset(first.dataset_id)
    assert dataset["name"] == "Mixpanel events"
    assert dataset["schemaRef"]["id"] == first.schema_id
    schema = client.get_schema(first.schema_id, accept=XED_FULL)
    assert schema["meta:class"] == CLASS_ID
    fields = schema["properties"]
    assert {"identityMap", "environment", "device", "web", "application", "marketing"} <= set(
        fields
    )
    mixpanel = fields[f"_{TENANT}"]["properties"]["mixpanel"]["properties"]
    assert mixpanel["distinctId"]["type"] == "string"
    (primary,) = client.schema_descriptors(first.schema_id)
    assert primary["xdm:isPrimary"] is True
    assert primary["xdm:sourceProperty"] == f"/_{TENANT}/mixpanel/distinctId"
    assert primary["xdm:namespace"] == "MixpanelDistinctId"
    codes = {namespace["code"] for namespace in client.identity_namespaces()}
    assert {"MixpanelDistinctId", "MixpanelUserId", "MixpanelDeviceId"} <= codes
    writes = _writes(platform)

    second = provision(client, spec)

    assert second.created == []
    assert (second.dataset_id, second.schema_id, second.field_group_id) == (
        first.dataset_id,
        first.schema_id,
        first.field_group_id,
    )
    assert _writes(platform) == writes, "the second run wrote nothing"


def test_the_command_prints_the_dataset_id_and_never_the_secret(
    platform: PlatformEmulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    for name, value in {
        "AEP_IMS_URL": platform.url,
        "AEP_PLATFORM_URL": platform.url,
        "AEP_CLIENT_ID": "local-sandbox-client",
        "AEP_CLIENT_SECRET": SECRET,
        "AEP_ORG_ID": "LOCALSANDBOX@AdobeOrg",
        "AEP_TENANT_ID": TENANT,
    }.items():
        monkeypatch.setenv(name, value)

    assert command.main([]) == 0
    first = capsys.readouterr()
    assert command.main([]) == 0
    second = capsys.readouterr()

    (dataset,) = [line for line in first.out.splitlines() if line.startswith("export ")]
    dataset_id = dataset.removeprefix("export AEP_DATASET_ID=")
    assert f"created  dataset 'Mixpanel events' {dataset_id}" in first.out
    assert "7 created" in first.out
    assert "nothing changed" in second.out
    assert second.out.splitlines()[-1] == dataset
    assert SECRET not in first.out + first.err + second.out + second.err

    monkeypatch.delenv("AEP_TENANT_ID")
    assert command.main([]) == 1
    assert "AEP_TENANT_ID is not set" in capsys.readouterr().err


def test_a_different_tenant_is_named(client: AEPClient) -> None:
    with pytest.raises(ProvisioningError, match=r"AEP_TENANT_ID='other'.*set AEP_TENANT_ID=acme"):
        provision(client, ProvisioningSpec.for_mapping("other", default_rules()))


def test_what_exists_but_does_not_fit_is_reported_and_left_alone(
    platform: PlatformEmulator, client: AEPClient
) -> None:
    spec = ProvisioningSpec.for_mapping(TENANT, default_rules())
    made_by_hand = client.create_tenant_resource(
        "schemas",
        {
            "title": SCHEMA_TITLE,
            "description": "made by hand",
            "type": "object",
            "allOf": [{"$ref": CLASS_ID}],
        },
    )
    with pytest.raises(ProvisioningError, match=r"exists without .*experienceevent-web") as raised:
        provision(client, spec)
    assert made_by_hand["$id"] in str(raised.value)
    assert "--schema-title" in str(raised.value)

    other = provision(
        client, ProvisioningSpec.for_mapping(TENANT, default_rules(), schema_title="Mine")
    )
    with pytest.raises(ProvisioningError, match="exists on another schema"):
        provision(
            client, ProvisioningSpec.for_mapping(TENANT, default_rules(), schema_title="Yours")
        )
    assert client.get_dataset(other.dataset_id)["schemaRef"]["id"] == other.schema_id


def test_descriptors_are_read_in_pages_until_the_schemas_own_is_found(
    platform: PlatformEmulator, client: AEPClient
) -> None:
    made = [
        provision(
            client,
            ProvisioningSpec.for_mapping(
                TENANT, default_rules(), schema_title=f"S{index}", dataset_name=f"D{index}"
            ),
        )
        for index in range(4)
    ]
    platform.descriptor_page_limit = 1  # AEP pages the -v2 listing; here a page is one
    for provisioned in made:
        (primary,) = client.schema_descriptors(provisioned.schema_id)
        assert primary["xdm:sourceSchema"] == provisioned.schema_id
    listings = [
        entry
        for entry in platform.request_log
        if entry.path == "/data/foundation/schemaregistry/tenant/descriptors"
        and entry.method == "GET"
    ]
    assert {entry.accept for entry in listings} == {"application/vnd.adobe.xdm-v2+json"}
    writes = _writes(platform)
    again = provision(
        client,
        ProvisioningSpec.for_mapping(TENANT, default_rules(), schema_title="S3", dataset_name="D3"),
    )
    assert again.created == [] and _writes(platform) == writes


@pytest.mark.parametrize("name", ["web, app events", "!web events", "*web**events*"])
def test_a_dataset_name_with_catalog_filter_characters_is_found_again(
    platform: PlatformEmulator, client: AEPClient, name: str
) -> None:
    provision(client, ProvisioningSpec.for_mapping(TENANT, default_rules(), dataset_name="x"))
    spec = ProvisioningSpec.for_mapping(TENANT, default_rules(), dataset_name=name)
    first = provision(client, spec)
    second = provision(client, spec)
    assert second.created == [] and second.dataset_id == first.dataset_id
    assert [item["id"] for item in client.find_datasets(name)] == [first.dataset_id]
