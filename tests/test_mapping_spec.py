"""The mapping spec: the default YAML, a user's own through MIXPANEL_ASSETS_MAPPING, and the
errors a malformed file gets (the variable, the file and the bad key, before any event is read)."""

from pathlib import Path

import pytest
from dagster import build_resources

from mixpanel_assets.settings import ConfigError
from mixpanel_assets.xdm.line_mapping import validation_errors
from mixpanel_assets.xdm.mapping import MappingSpec, to_xdm
from mixpanel_assets.xdm.resource import XdmMappingResource
from mixpanel_assets.xdm.schema import schema_errors
from mixpanel_assets.xdm.spec import (
    DEFAULT_MAPPING_FILE,
    MappingFileError,
    MappingRules,
    default_rules,
    load_rules,
    main,
)

DEFAULT_TEXT = DEFAULT_MAPPING_FILE.read_text(encoding="utf-8")
OS_LINE = 1 + DEFAULT_TEXT.splitlines().index(
    "  $os: {xdm: environment.operatingSystem, type: string}"
)
EVENT = {"time": 1700000000, "distinct_id": "u1", "$insert_id": "i1"}


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mapping.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _rules_from_env() -> MappingRules:
    """The rules of ``XdmMappingResource.from_env()``, with its variables resolved by Dagster."""
    with build_resources({"xdm_mapping": XdmMappingResource.from_env()}) as resources:
        return resources.xdm_mapping.rules()


def _edited(old: str, new: str) -> str:
    assert old in DEFAULT_TEXT, old
    return DEFAULT_TEXT.replace(old, new, 1)


# What the issue asks the default to cover, and where each property must land.
ISSUE_TABLE = {
    "$current_url": "web.webPageDetails.URL",
    "$referrer": "web.webReferrer.URL",
    "current_page_title": "web.webPageDetails.name",
    "$browser": "environment.browserDetails.name",
    "$browser_version": "environment.browserDetails.version",
    "$os": "environment.operatingSystem",
    "$device": "device.type",
    "$model": "device.model",
    "$manufacturer": "device.manufacturer",
    "$screen_height": "device.screenHeight",
    "$screen_width": "device.screenWidth",
    "$city": "placeContext.geo.city",
    "$region": "placeContext.geo.stateProvince",
    "mp_country_code": "placeContext.geo.countryCode",
    "$app_version_string": "application.version",
    "$app_release": "application.id",
    "utm_source": "marketing.trackingCode",
    "utm_medium": "marketing.campaignGroup",
    "utm_campaign": "marketing.campaignName",
    "mp_lib": "implementationDetails.name",
    "$lib_version": "implementationDetails.version",
    "$insert_id": "_tenant.mixpanel.insertId",
    "mp_processing_time_ms": "_tenant.mixpanel.processingTimeMs",
    "$mp_api_endpoint": "_tenant.mixpanel.apiEndpoint",
    "$mp_api_timestamp_ms": "_tenant.mixpanel.apiTimestampMs",
    "$import": "_tenant.mixpanel.imported",
    "distinct_id": "_tenant.mixpanel.distinctId",
}


def test_the_default_mapping_covers_the_standard_mixpanel_properties() -> None:
    rules = default_rules()
    assert {name: rules.properties[name].xdm for name in ISSUE_TABLE} == ISSUE_TABLE
    assert rules.properties["$screen_height"].type == "integer"
    assert rules.properties["mp_country_code"].type == "country_code"
    assert rules.event_types.by_event["$mp_web_page_view"] == "web.webpagedetails.pageViews"
    assert rules.identity_namespaces.distinct_id == "MixpanelDistinctId"
    assert rules.max_quarantined_share == 0.01
    assert rules.custom_tenant_fields() == ()


def test_a_users_mapping_file_is_read_from_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _edited("distinct_id: MixpanelDistinctId", "distinct_id: CRMID")
    text = text.replace("Purchase: commerce.purchases", "Purchase: commerce.backofficeOrderPlaced")
    text = text.replace(
        "properties:\n",
        "properties:\n"
        "  plan: {xdm: _tenant.subscription.plan, type: string}\n"
        "  cart_total: {xdm: _tenant.subscription.cartTotal, type: number}\n",
    )
    monkeypatch.setenv("AEP_TENANT_ID", "acme")
    monkeypatch.setenv("MIXPANEL_ASSETS_MAPPING", _write(tmp_path, text))
    rules = _rules_from_env()
    custom_fields = (
        (("subscription", "plan"), "string"),
        (("subscription", "cartTotal"), "number"),
    )
    assert rules.custom_tenant_fields() == custom_fields

    spec = MappingSpec(project_id="1", tenant_id="acme", rules=rules)
    record = to_xdm("Purchase", {**EVENT, "plan": "pro", "cart_total": "129.50"}, spec)
    assert record["eventType"] == "commerce.backofficeOrderPlaced"
    assert record["identityMap"]["CRMID"][0]["id"] == "u1"
    assert record["_acme"]["subscription"] == {"plan": "pro", "cartTotal": 129.5}
    assert "properties" not in record["_acme"]["mixpanel"]
    assert validation_errors(record, "acme", custom_fields) == []
    # The typed custom field is part of the schema records are validated against.
    record["_acme"]["subscription"]["cartTotal"] = "129.50"
    assert schema_errors(record, "acme", custom_fields) == [
        "_acme/subscription/cartTotal: '129.50' is not of type 'number'"
    ]


def test_a_value_its_conversion_cannot_type_stays_a_property_in_a_users_mapping(
    tmp_path: Path,
) -> None:
    text = DEFAULT_TEXT.replace(
        "properties:\n", "properties:\n  seats: {xdm: _tenant.account.seats, type: integer}\n"
    )
    spec = MappingSpec(project_id="1", tenant_id="acme", rules=load_rules(_write(tmp_path, text)))
    record = to_xdm("E", {**EVENT, "seats": "twelve"}, spec)
    assert "account" not in record["_acme"]
    assert record["_acme"]["mixpanel"]["properties"] == {"seats": "twelve"}


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("max_quarantined_share", "max_quarantine_share", "max_quarantine_share: unknown key"),
        (
            "$screen_height: {xdm: device.screenHeight, type: integer}",
            "$screen_height: {xdm: device.screenHeight, type: int}",
            "properties.$screen_height.type: 'int' is not a conversion; use one of string",
        ),
        (
            "$current_url: {xdm: web.webPageDetails.URL, type: url}",
            "$current_url: {xdm: web.webPageDetail.URL, type: url}",
            "properties.$current_url: xdm 'web.webPageDetail.URL' is not a field of the XDM "
            "ExperienceEvent class",
        ),
        (
            "$current_url: {xdm: web.webPageDetails.URL, type: url}",
            "$current_url: {xdm: web.webPageDetails, type: url}",
            "properties.$current_url: xdm 'web.webPageDetails' is object, not a single value; "
            "map to one of its fields: ",
        ),
        (
            "$model: {xdm: device.model, type: string}",
            "$model: {xdm: device.screenWidth, type: string}",
            "properties.$model: xdm 'device.screenWidth' holds integer but this conversion gives "
            "string; use type: integer",
        ),
        (
            "$os: {xdm: environment.operatingSystem, type: string}",
            "$os: {xdm: timestamp, type: string}",
            "properties.$os.xdm: 'timestamp' is filled by the mapping itself",
        ),
        (
            "$insert_id: {xdm: _tenant.mixpanel.insertId, type: string}",
            "$insert_id: {xdm: _tenant.mixpanel.properties.insertId, type: string}",
            "properties.$insert_id.xdm: '_tenant.mixpanel.properties.insertId' is filled by the "
            "mapping itself",
        ),
        (
            "$model: {xdm: device.model, type: string}",
            "$model: {xdm: device.manufacturer, type: string}",
            "properties: properties '$model' and '$manufacturer' both map to 'device.manufacturer'",
        ),
        (
            "user_id: MixpanelUserId",
            "user_id: MixpanelDistinctId",
            "identity_namespaces: distinct_id, user_id and device_id need three different",
        ),
        ("max_quarantined_share: 0.01", "max_quarantined_share: 2", "max_quarantined_share: "),
        ("max_quarantined_share: 0.01", "", "max_quarantined_share: Field required"),
        (
            "  $os: {xdm: environment.operatingSystem",
            "  $browser: {xdm: environment.operatingSystem",
            f"not valid YAML: line {OS_LINE}, column 3: the key '$browser' appears twice",
        ),
        ("event_types:\n", "event_types: [\n", "not valid YAML: line"),
        (
            "properties:\n",
            "properties:\n  time: {xdm: _tenant.mixpanel.eventTime, type: integer}\n",
            "properties: 'time' becomes timestamp",
        ),
    ],
)
def test_a_malformed_mapping_file_names_the_variable_the_file_and_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, old: str, new: str, expected: str
) -> None:
    path = _write(tmp_path, _edited(old, new))
    monkeypatch.setenv("AEP_TENANT_ID", "acme")
    monkeypatch.setenv("MIXPANEL_ASSETS_MAPPING", path)
    with pytest.raises(ConfigError) as raised:
        _rules_from_env()
    message = str(raised.value)
    assert message.startswith(f"MIXPANEL_ASSETS_MAPPING={path}: ")
    assert expected in message
    assert "unset MIXPANEL_ASSETS_MAPPING to use the default mapping" in message


def test_a_missing_mapping_file_is_named(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere.yaml")
    with pytest.raises(MappingFileError, match=r"MIXPANEL_ASSETS_MAPPING=.*nowhere\.yaml: cannot"):
        load_rules(missing)


def test_an_edited_file_is_read_again(tmp_path: Path) -> None:
    path = _write(tmp_path, DEFAULT_TEXT)
    assert load_rules(path).max_quarantined_share == 0.01
    _write(tmp_path, _edited("max_quarantined_share: 0.01", "max_quarantined_share: 0.05\n"))
    assert load_rules(path).max_quarantined_share == 0.05


def test_the_check_command_accepts_a_good_file_and_names_what_is_wrong_with_a_bad_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _write(
        tmp_path,
        DEFAULT_TEXT.replace(
            "properties:\n", "properties:\n  plan: {xdm: _tenant.subscription.plan}\n"
        ),
    )
    assert main([good]) == 0
    printed = capsys.readouterr().out
    assert f"{good}: valid" in printed
    assert "32 properties mapped" in printed
    assert "add to your tenant field group in AEP: _tenant.subscription.plan" in printed

    bad = tmp_path / "bad.yaml"
    bad.write_text(_edited("type: country_code", "type: country"), encoding="utf-8")
    assert main([str(bad)]) == 1
    assert "properties.mp_country_code.type: 'country' is not a conversion" in (
        capsys.readouterr().err
    )
