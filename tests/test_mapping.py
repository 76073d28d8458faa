"""The mapping is a pure function: Mixpanel event in, XDM record (or a reason) out."""

import hashlib
from datetime import UTC, datetime

import orjson
import pytest

from mixpanel_assets.xdm.line_mapping import validation_errors
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


APP_OPEN = {
    "time": 1746097970,
    "distinct_id": "maria.4711@example.com",
    "$user_id": "maria.4711@example.com",
    "$device_id": "5B1F1A9E-93C4-4A55-8D0B-61C2F0E4B7A1",
    "$insert_id": "b6f0c3e2-4d1a-4c8e-9f7b-2a5d6e8c1f03",
    "$app_version_string": "4.12.0",
    "$app_release": 41200,
    "$manufacturer": "Apple",
    "$model": "iPhone15,2",
    "$device": "iPhone",
    "$os": "iOS",
    "$os_version": "18.2",
    "$screen_height": 852,
    "$screen_width": 393,
    "$wifi": True,
    "$city": "Tokyo",
    "$region": "JP-13",
    "mp_country_code": "JP",
    "mp_lib": "iphone",
    "$lib_version": "4.3.0",
    "$mp_api_endpoint": "api.mixpanel.com",
    "$mp_api_timestamp_ms": 1746097975100,
    "mp_processing_time_ms": 1746097975312,
    "$import": True,
    "from_background": False,
    "launch_ms": 812,
}


def test_mobile_app_open_maps_to_the_exact_record() -> None:
    record = to_xdm("App Open", APP_OPEN, SPEC)
    material = b"2384945|App Open|1746097970000|b6f0c3e2-4d1a-4c8e-9f7b-2a5d6e8c1f03"
    assert record == {
        "_id": hashlib.sha256(material).hexdigest(),
        "timestamp": "2025-05-01T11:12:50.000Z",
        "eventType": "application.launch",
        "identityMap": {
            "MixpanelDistinctId": [
                {"id": "maria.4711@example.com", "authenticatedState": "ambiguous", "primary": True}
            ],
            "MixpanelUserId": [
                {
                    "id": "maria.4711@example.com",
                    "authenticatedState": "authenticated",
                    "primary": False,
                }
            ],
            "MixpanelDeviceId": [
                {
                    "id": "5B1F1A9E-93C4-4A55-8D0B-61C2F0E4B7A1",
                    "authenticatedState": "ambiguous",
                    "primary": False,
                }
            ],
        },
        "application": {"version": "4.12.0", "id": "41200"},
        "device": {
            "manufacturer": "Apple",
            "model": "iPhone15,2",
            "type": "iPhone",
            "screenHeight": 852,
            "screenWidth": 393,
        },
        "environment": {
            "operatingSystem": "iOS",
            "operatingSystemVersion": "18.2",
            "type": "application",
        },
        "placeContext": {"geo": {"city": "Tokyo", "stateProvince": "JP-13", "countryCode": "JP"}},
        "implementationDetails": {
            "name": "https://mixpanel.com/libraries/iphone",
            "version": "4.3.0",
        },
        "_acme": {
            "mixpanel": {
                "eventName": "App Open",
                "time": 1746097970,
                "distinctId": "maria.4711@example.com",
                "userId": "maria.4711@example.com",
                "deviceId": "5B1F1A9E-93C4-4A55-8D0B-61C2F0E4B7A1",
                "insertId": "b6f0c3e2-4d1a-4c8e-9f7b-2a5d6e8c1f03",
                "apiEndpoint": "api.mixpanel.com",
                "apiTimestampMs": 1746097975100,
                "processingTimeMs": 1746097975312,
                "imported": True,
                "properties": {"$wifi": "true", "from_background": "false", "launch_ms": "812"},
            }
        },
    }
    assert validation_errors(record, "acme") == []


PURCHASE = {
    "time": 1721228056.002,
    "distinct_id": "$device:18f3a7c2b41-0d9e2c5a7b8f1-26011b51-1fa400",
    "$insert_id": "hpuDqcvpltpCjBsebtxwadtEBDnFAdycabFb",
    "$browser": "Safari",
    "$browser_version": 17.4,
    "$os": "Mac OS X",
    "$current_url": "https://shop.example.com/checkout",
    "current_page_title": "Purchase",
    "$referrer": "$direct",
    "$referring_domain": "$direct",
    "utm_source": "newsletter",
    "utm_medium": "email",
    "utm_campaign": "weekly-digest",
    "$city": "San Francisco",
    "$region": "California",
    "mp_country_code": "US",
    "mp_lib": "web",
    "$lib_version": "2.61.1",
    "order_id": "ORD-00421337",
    "revenue": 218.5,
    "items": [{"sku": "SKU-2040", "qty": 1, "price": 89.5}],
    "coupon_code": None,
    "shipping": {"method": "standard", "address": {"postal_prefix": "941"}},
    "mp_processing_time_ms": 1721228056937,
}


def test_anonymous_web_purchase_maps_to_the_exact_record() -> None:
    record = to_xdm("Purchase", PURCHASE, SPEC)
    material = b"2384945|Purchase|1721228056002|hpuDqcvpltpCjBsebtxwadtEBDnFAdycabFb"
    assert record == {
        "_id": hashlib.sha256(material).hexdigest(),
        "timestamp": "2024-07-17T14:54:16.002Z",
        "eventType": "commerce.purchases",
        "identityMap": {
            "MixpanelDeviceId": [
                {
                    "id": "18f3a7c2b41-0d9e2c5a7b8f1-26011b51-1fa400",
                    "authenticatedState": "ambiguous",
                    "primary": True,
                }
            ]
        },
        "environment": {
            "browserDetails": {"name": "Safari", "version": "17.4"},
            "operatingSystem": "Mac OS X",
            "type": "browser",
        },
        "web": {"webPageDetails": {"URL": "https://shop.example.com/checkout", "name": "Purchase"}},
        "marketing": {
            "trackingCode": "newsletter",
            "campaignGroup": "email",
            "campaignName": "weekly-digest",
        },
        "placeContext": {"geo": {"city": "San Francisco", "countryCode": "US"}},
        "implementationDetails": {
            "name": "https://mixpanel.com/libraries/web",
            "version": "2.61.1",
        },
        "_acme": {
            "mixpanel": {
                "eventName": "Purchase",
                "time": 1721228056.002,
                "distinctId": "$device:18f3a7c2b41-0d9e2c5a7b8f1-26011b51-1fa400",
                "insertId": "hpuDqcvpltpCjBsebtxwadtEBDnFAdycabFb",
                "processingTimeMs": 1721228056937,
                "properties": {
                    "$referrer": "$direct",
                    "$referring_domain": "$direct",
                    "$region": "California",
                    "order_id": "ORD-00421337",
                    "revenue": "218.5",
                    "items": '[{"sku":"SKU-2040","qty":1,"price":89.5}]',
                    "shipping": '{"method":"standard","address":{"postal_prefix":"941"}}',
                },
            }
        },
    }
    assert validation_errors(record, "acme") == []


def test_an_event_exported_again_after_an_identity_merge_keeps_its_id() -> None:
    first_export = dict(PURCHASE)
    after_merge = {**PURCHASE, "distinct_id": "customer-8812", "$user_id": "customer-8812"}
    reordered = dict(reversed(list(after_merge.items())))
    records = [to_xdm("Purchase", event, SPEC) for event in (first_export, after_merge, reordered)]
    assert len({record["_id"] for record in records}) == 1
    assert len({record["timestamp"] for record in records}) == 1
    assert records[1]["identityMap"]["MixpanelDistinctId"][0]["id"] == "customer-8812"


def test_a_device_prefixed_distinct_id_keeps_one_value_per_namespace() -> None:
    properties = {
        "time": 1700000000,
        "distinct_id": "$device:from-distinct-id",
        "$device_id": "from-device-id",
        "$insert_id": "x",
    }
    record = to_xdm("E", properties, SPEC)
    assert record["identityMap"] == {
        "MixpanelDeviceId": [
            {"id": "from-device-id", "authenticatedState": "ambiguous", "primary": True}
        ]
    }
    assert record["_acme"]["mixpanel"]["distinctId"] == "$device:from-distinct-id"


def test_events_without_a_known_name_get_the_default_event_type() -> None:
    properties = {"time": 1700000000, "distinct_id": "u", "$insert_id": "x"}
    assert to_xdm("Screen View", properties, SPEC)["eventType"] == "mixpanel.event"
    assert to_xdm("$mp_web_page_view", properties, SPEC)["eventType"] == (
        "web.webpagedetails.pageViews"
    )


def test_server_side_events_get_no_environment_type() -> None:
    properties = {"time": 1700000000, "distinct_id": "u", "$insert_id": "x", "mp_lib": "python"}
    record = to_xdm("E", properties, SPEC)
    assert "environment" not in record
    assert record["implementationDetails"] == {"name": "https://mixpanel.com/libraries/python"}


@pytest.mark.parametrize(
    ("time_value", "reason"),
    [
        (float("nan"), "no usable time"),
        (True, "no usable time"),
        (-5, "no usable time"),
        (10**20, "in the future"),
        (1e300, "in the future"),
    ],
)
def test_unusable_times_are_reasons_not_crashes(time_value: object, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        to_xdm("E", {"time": time_value, "distinct_id": "u"}, SPEC)


def test_a_legacy_time_past_year_9999_is_a_reason_not_a_crash() -> None:
    spec = MappingSpec(
        project_id="1", tenant_id="acme", event_time="project_local", project_timezone="Asia/Tokyo"
    )
    with pytest.raises(InvalidEvent, match="no usable time"):
        to_xdm("E", {"time": 10**16, "distinct_id": "u"}, spec)
