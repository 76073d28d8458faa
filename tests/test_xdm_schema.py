"""The official XDM schemas, converted to AEP notation, accept good records and reject bad ones."""

import fastjsonschema
import pytest

from mixpanel_assets.xdm.schema import (
    _FORMATS,
    empty_value_paths,
    field_schemas,
    schema_errors,
    tenant_field_group,
    to_aep_notation,
    value_checker,
)

VALID = {
    "_id": "4f1c0b",
    "timestamp": "2026-11-01T10:00:00.123Z",
    "eventType": "commerce.purchases",
    "identityMap": {"MixpanelDistinctId": [{"id": "u1", "primary": True}]},
    "environment": {"type": "browser", "browserDetails": {"name": "Chrome", "version": "131"}},
    "device": {"screenHeight": 800, "screenWidth": 1280},
    "placeContext": {"geo": {"countryCode": "US", "city": "Boston", "_schema": {"latitude": 42.3}}},
    "web": {"webPageDetails": {"URL": "https://example.com", "name": "Home"}},
    "marketing": {"trackingCode": "google"},
    "implementationDetails": {"name": "https://mixpanel.com/libraries/web", "version": "2.5"},
    "_acme": {"mixpanel": {"eventName": "Purchase", "properties": {"plan": "pro"}}},
}


def test_a_complete_record_is_valid() -> None:
    assert schema_errors(VALID, "acme") == []


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"timestamp": "1700000000"}, "timestamp: '1700000000' is not a 'date-time'"),
        ({"timestamp": 1700000000000}, "timestamp: 1700000000000 is not of type 'string'"),
        ({"_id": "has space"}, "_id: 'has space' is not a 'uri-reference'"),
        ({"device": {"screenHeight": "800"}}, "device/screenHeight: '800' is not of type"),
        ({"placeContext": {"geo": {"countryCode": "us"}}}, "placeContext/geo/countryCode"),
        ({"environment": {"type": "desktop"}}, "environment/type: 'desktop' is not one of"),
        (
            {"identityMap": {"X": [{"id": "u", "authenticatedState": "maybe"}]}},
            "identityMap/X/0/authenticatedState",
        ),
        ({"_acme": {"mixpanel": {"processingTimeMs": "1"}}}, "_acme/mixpanel/processingTimeMs"),
        ({"implementationDetails": {"name": "web"}}, "implementationDetails/name: 'web' is not a"),
    ],
)
def test_schema_violations_are_named_by_path(change: dict, error: str) -> None:
    errors = schema_errors({**VALID, **change}, "acme")
    assert any(message.startswith(error) for message in errors), errors


def test_missing_required_fields_are_reported() -> None:
    errors = schema_errors({"eventType": "x"}, "acme")
    assert "(record): '_id' is a required property" in errors
    assert "(record): 'timestamp' is a required property" in errors


def test_source_notation_is_converted_like_adobes_converter() -> None:
    converted = to_aep_notation(
        {
            "properties": {"xdm:timestamp": {"type": "string"}, "@id": {}, "schema:latitude": {}},
            "required": ["@id", "xdm:timestamp"],
            "meta:license": ["x"],
        }
    )
    assert converted == {
        "properties": {
            "timestamp": {"type": "string"},
            "_id": {},
            "_schema": {"type": "object", "properties": {"latitude": {}}},
        },
        "required": ["_id", "timestamp"],
    }


def test_empty_values_are_found_anywhere() -> None:
    record = {"a": None, "b": {"c": ""}, "d": [1, []], "e": {}, "f": 0, "g": False}
    assert empty_value_paths(record) == ["a", "b/c", "d/1", "e"]


def test_tenant_id_is_checked() -> None:
    with pytest.raises(ValueError, match="AEP_TENANT_ID"):
        tenant_field_group("_bad-tenant")


def test_fields_are_found_through_refs_and_field_groups() -> None:
    assert [node["type"] for node in field_schemas(("device", "screenHeight"))] == ["integer"]
    assert field_schemas(("web", "webPageDetail", "URL")) == ()
    country = field_schemas(("placeContext", "geo", "countryCode"))
    assert [node.get("pattern") for node in country] == ["^[A-Z]{2}$"]
    assert [node["type"] for node in field_schemas(("_tenant", "mixpanel", "insertId"))] == [
        "string"
    ]


def test_value_checkers_hold_the_constraints_beyond_the_type() -> None:
    country_code = value_checker(("placeContext", "geo", "countryCode"))
    assert country_code is not None
    assert country_code("US") and not country_code("us") and not country_code("USA")
    library = value_checker(("implementationDetails", "name"))
    assert library is not None
    assert library("https://mixpanel.com/libraries/web") and not library("web")
    assert value_checker(("device", "model")) is None


@pytest.mark.parametrize(
    "path",
    [
        ("placeContext", "geo", "countryCode"),
        ("placeContext", "geo", "stateProvince"),
        ("implementationDetails", "name"),
        ("web", "webPageDetails", "URL"),
        ("environment", "type"),
    ],
)
def test_value_checkers_agree_with_the_fields_whole_schema(path: tuple[str, ...]) -> None:
    """The inline checks written for a field give fastjsonschema's verdict on its schema."""
    nodes = field_schemas(path)
    whole = fastjsonschema.compile(
        {"allOf": [{key: value for key, value in node.items() if key != "$ref"} for node in nodes]},
        formats=_FORMATS,
    )
    fits = value_checker(path) or (lambda value: True)
    for value in ["US", "us", "USA", "US-CA", "", "browser", "web", "https://a.example/x", "a b$"]:
        try:
            whole(value)
            expected = True
        except fastjsonschema.JsonSchemaValueException:
            expected = False
        assert fits(value) is expected, (path, value)


def test_custom_tenant_fields_join_the_schema() -> None:
    custom = ((("subscription", "seats"), "integer"),)
    record = {**VALID, "_acme": {"subscription": {"seats": "12"}}}
    assert schema_errors(record, "acme") == []  # unknown fields pass the open content model
    assert schema_errors(record, "acme", custom) == [
        "_acme/subscription/seats: '12' is not of type 'integer'"
    ]
