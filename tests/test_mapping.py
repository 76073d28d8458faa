"""The mapping is a pure function: Mixpanel event in, XDM record (or a reason) out."""

import hashlib
from datetime import UTC, datetime

import orjson
import pytest

from mixpanel_assets.xdm.day_mapping import validation_errors
from mixpanel_assets.xdm.mapping import (
    InvalidEvent,
    MappingSpec,
    dedup_key,
    event_id,
    parse_event,
    to_xdm,
)

SPEC = MappingSpec(project_id="2384945", tenant_id="acme")

PAGE_VIEW = {
    "time": 1746097970,
    "distinct_id": "$device:123",
    "$browser": "Chrome",
    "$browser_version": 135,
    "$device_id": "123",
    "$insert_id": "source_id",
    "$mp_api_endpoint": "api-js.mixpanel.com",
    "$mp_api_timestamp_ms": 1746078175363,
    "$mp_autocapture": True,
    "mp_country_code": "in",
    "mp_lib": "web",
    "mp_processing_time_ms": 1746078175546,
    "utm_source": "google",
    "$current_url": "https://example.com/pricing",
    "$screen_height": 900.0,
    "$screen_width": "1440",
    "$region": "Karnataka",
    "cart": {"items": [{"sku": "A1", "qty": 2}], "total": 18.5},
    "tags": ["new", "promo"],
    "coupon": None,
    "note": "",
    "empty_list": [],
}


def test_page_view_maps_to_the_exact_record() -> None:
    record = to_xdm("$mp_web_page_view", PAGE_VIEW, SPEC)
    expected_id = hashlib.sha256(b"2384945|$mp_web_page_view|1746097970000|source_id").hexdigest()
    assert record == {
        "_id": expected_id,
        "timestamp": "2025-05-01T11:12:50.000Z",
        "eventType": "web.webpagedetails.pageViews",
        "identityMap": {
            "MixpanelDeviceId": [{"id": "123", "authenticatedState": "ambiguous", "primary": True}]
        },
        "environment": {
            "browserDetails": {"name": "Chrome", "version": "135"},
            "type": "browser",
        },
        "placeContext": {"geo": {"countryCode": "IN"}},
        "marketing": {"trackingCode": "google"},
        "implementationDetails": {"name": "https://mixpanel.com/libraries/web"},
        "web": {"webPageDetails": {"URL": "https://example.com/pricing"}},
        "device": {"screenHeight": 900, "screenWidth": 1440},
        "_acme": {
            "mixpanel": {
                "eventName": "$mp_web_page_view",
                "time": 1746097970,
                "distinctId": "$device:123",
                "deviceId": "123",
                "insertId": "source_id",
                "apiEndpoint": "api-js.mixpanel.com",
                "apiTimestampMs": 1746078175363,
                "processingTimeMs": 1746078175546,
                "properties": {
                    "$mp_autocapture": "true",
                    "$region": "Karnataka",
                    "cart": '{"items":[{"sku":"A1","qty":2}],"total":18.5}',
                    "tags": '["new","promo"]',
                },
            }
        },
    }
    assert validation_errors(record, "acme") == []


def test_identified_user_has_distinct_id_as_primary_and_one_value_per_namespace() -> None:
    properties = {
        "time": 1700000000,
        "distinct_id": "user-42",
        "$user_id": "user-42",
        "$device_id": "dev-9",
        "$insert_id": "i1",
    }
    identity_map = to_xdm("Purchase", properties, SPEC)["identityMap"]
    assert identity_map == {
        "MixpanelDistinctId": [
            {"id": "user-42", "authenticatedState": "ambiguous", "primary": True}
        ],
        "MixpanelUserId": [
            {"id": "user-42", "authenticatedState": "authenticated", "primary": False}
        ],
        "MixpanelDeviceId": [{"id": "dev-9", "authenticatedState": "ambiguous", "primary": False}],
    }


def test_same_event_re_exported_with_a_merged_distinct_id_keeps_its_id() -> None:
    before = {"time": 1700000000, "distinct_id": "$device:d1", "$insert_id": "abc"}
    after = {**before, "distinct_id": "user-1"}
    assert event_id(SPEC, "Sign Up", before) == event_id(SPEC, "Sign Up", after)
    assert event_id(SPEC, "Sign Up", before) != event_id(SPEC, "Log In", before)


def test_id_without_insert_id_is_stable_and_ignores_distinct_id() -> None:
    event = {"time": 1700000000, "distinct_id": "a", "plan": "pro"}
    assert event_id(SPEC, "Upgrade", event) == event_id(
        SPEC, "Upgrade", {**event, "distinct_id": "b"}
    )
    assert event_id(SPEC, "Upgrade", event) != event_id(SPEC, "Upgrade", {**event, "plan": "team"})


def test_seconds_fractional_seconds_and_milliseconds_give_the_same_instant() -> None:
    base = {"distinct_id": "u", "$insert_id": "x"}
    stamps = {
        to_xdm("E", {**base, "time": value}, SPEC)["timestamp"]
        for value in (1721228056, 1721228056.0, 1721228056000)
    }
    assert stamps == {"2024-07-17T14:54:16.000Z"}
    fractional = to_xdm("E", {**base, "time": 1721228056.002}, SPEC)["timestamp"]
    assert fractional == "2024-07-17T14:54:16.002Z"


def test_legacy_project_local_time_is_converted_to_utc_with_dst() -> None:
    spec = MappingSpec(
        project_id="1", tenant_id="acme", event_time="project_local", project_timezone="US/Eastern"
    )
    summer_local = int(datetime(2020, 10, 13, 17, 48, 31, tzinfo=UTC).timestamp())
    winter_local = int(datetime(2020, 12, 13, 17, 48, 31, tzinfo=UTC).timestamp())
    base = {"distinct_id": "u", "$insert_id": "x"}
    assert to_xdm("E", {**base, "time": summer_local}, spec)["timestamp"] == (
        "2020-10-13T21:48:31.000Z"
    )
    assert to_xdm("E", {**base, "time": winter_local}, spec)["timestamp"] == (
        "2020-12-13T22:48:31.000Z"
    )


@pytest.mark.parametrize(
    ("properties", "reason"),
    [
        ({"time": 1700000000, "$insert_id": "x"}, "no identity"),
        ({"distinct_id": "u"}, "no usable time"),
        ({"distinct_id": "u", "time": "1700000000"}, "no usable time"),
        ({"distinct_id": "u", "time": 4102444800}, "in the future"),
    ],
)
def test_events_that_cannot_be_xdm_say_why(properties: dict, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        to_xdm("E", properties, SPEC)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"terminated early", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"properties": {}}', "no event name"),
        (b'{"event": "E", "properties": [1]}', "no properties"),
    ],
)
def test_unparseable_lines_say_why(line: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        parse_event(line)


def test_odd_property_names_and_unicode_survive_into_the_tenant_map() -> None:
    properties = {
        "time": 1700000000,
        "distinct_id": "u",
        "$insert_id": "x",
        "utm_medium": "email",
        "UTM_Medium": "Email",
        "name with space": "a\u2028b",
        "dotted.name": "日本語 🎉",
        "new\nline": True,
    }
    record = to_xdm("E", properties, SPEC)
    custom = record["_acme"]["mixpanel"]["properties"]
    assert custom == {
        "UTM_Medium": "Email",
        "name with space": "a\u2028b",
        "dotted.name": "日本語 🎉",
        "new\nline": "true",
    }
    assert record["marketing"] == {"campaignGroup": "email"}
    assert orjson.loads(orjson.dumps(record)) == record


def test_dedup_key_follows_mixpanel_and_falls_back_to_content() -> None:
    event = {"time": 1, "distinct_id": "u", "$insert_id": "i", "extra": 1}
    assert dedup_key("E", event) == dedup_key("E", {**event, "extra": 2})
    assert dedup_key("E", event) != dedup_key("E", {**event, "distinct_id": "v"})
    no_insert = {"time": 1, "distinct_id": "u", "extra": 1}
    assert dedup_key("E", no_insert) == dedup_key("E", dict(no_insert))
    assert dedup_key("E", no_insert) != dedup_key("E", {**no_insert, "extra": 2})


def test_values_xdm_cannot_type_stay_as_tenant_properties() -> None:
    properties = {
        "time": 1700000000,
        "distinct_id": "u",
        "$insert_id": "x",
        "mp_country_code": "USA",
        "$screen_height": "tall",
        "$browser": {"odd": True},
    }
    record = to_xdm("E", properties, SPEC)
    assert "placeContext" not in record and "device" not in record
    assert record["_acme"]["mixpanel"]["properties"] == {
        "mp_country_code": "USA",
        "$screen_height": "tall",
        "$browser": '{"odd":true}',
    }
    assert validation_errors(record, "acme") == []
