"""The synthetic days and the export emulator, exercised over real HTTP on 127.0.0.1.

The export client is tested against this emulator, so the emulator must itself be shown to follow
Mixpanel's contract: streaming that cuts lines, gzip, error codes, filters, late data and faults.
"""

from __future__ import annotations

import re
import statistics
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import requests

from mixpanel_assets.sandbox.mixpanel_emulator import Fault, MixpanelEmulator
from mixpanel_assets.sandbox.synthetic_events import ODD_CASES, late_events, synthetic_day

TODAY = date(2025, 7, 20)
DAY = date(2025, 7, 19)
AUTH = ("local-sandbox.mp-service-account", "local-sandbox-secret")
PROJECT = "2384945"
PROCESSING = '"mp_processing_time_ms"'


@pytest.fixture
def emulator() -> Iterator[MixpanelEmulator]:
    with MixpanelEmulator(today=lambda: TODAY) as mp:
        yield mp


def export(
    mp: MixpanelEmulator,
    *,
    auth: Any = AUTH,
    headers: dict[str, str] | None = None,
    stream: bool = False,
    **params: str | None,
) -> requests.Response:
    """One export request; a None parameter is left out of the query."""
    query = {"project_id": mp.project_id, "from_date": str(DAY), "to_date": str(DAY), **params}
    return requests.get(
        mp.export_url, params=query, auth=auth, headers=headers, stream=stream, timeout=10
    )


def body_of(lines: Iterator[bytes] | list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def split_body(body: bytes) -> list[bytes]:
    assert body == b"" or body.endswith(b"\n")
    return body.split(b"\n")[:-1]


def props_of(lines: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(line)["properties"] for line in lines]


def depth(value: Any) -> int:
    """Nesting depth of objects: 1 for an object of scalars."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return max((depth(v) for v in value), default=0)
    return 0


# -- synthetic days ---------------------------------------------------------------------------


def test_synthetic_day_is_deterministic_and_differs_by_day_and_project() -> None:
    day = synthetic_day(PROJECT, DAY, events_per_day=400)
    assert not isinstance(day, list)  # streamed, not built
    lines = list(day)
    assert len(lines) == 400
    assert lines == list(synthetic_day(PROJECT, DAY, events_per_day=400))
    assert all(b"\n" not in line for line in lines)
    other_day = list(synthetic_day(PROJECT, DAY - timedelta(days=1), events_per_day=400))
    other_project = list(synthetic_day("1000001", DAY, events_per_day=400))
    assert not set(lines) & set(other_day)
    assert not set(lines) & set(other_project)
    # The user pool is per project: identities recur across days, not across projects.
    ids = {p.get("distinct_id") for p in props_of(lines)} - {None}
    assert ids & {p.get("distinct_id") for p in props_of(other_day)}
    assert not ids & {p.get("distinct_id") for p in props_of(other_project)}


def odd_cases_in(lines: list[bytes]) -> set[str]:
    """Which kinds of ODD_CASES the lines contain, each detected from the bytes alone."""
    found: set[str] = set()
    events = [orjson.loads(line) for line in lines]
    if any(n > 1 for n in Counter(lines).values()):
        found.add("duplicate_line")
    for event in events:
        p = event["properties"]
        if "$insert_id" not in p:
            found.add("missing_insert_id")
        if "distinct_id" not in p and "$device_id" in p:
            found.add("missing_distinct_id")
        if not {"distinct_id", "$device_id", "$user_id"} & p.keys():
            found.add("no_identity")
        if isinstance(p["time"], float):
            found.add("float_time")
        if {"utm_medium", "UTM_Medium"} <= p.keys():
            found.add("case_colliding_names")
        keys = p.keys()
        if "$custom_experiment" in keys and all(
            any(mark in k for k in keys) for mark in (" ", ".", "\n")
        ):
            found.add("odd_property_names")
    raw = b"".join(lines).decode()
    if "\u2028" in raw and "\u2029" in raw:
        found.add("line_separators")
    if re.search("[\U0001f300-\U0001faff]", raw) and re.search("[\u4e00-\u9fff\uac00-\ud7af]", raw):
        found.add("non_ascii")
    keys_by_insert_id: defaultdict[str, set[tuple[Any, ...]]] = defaultdict(set)
    for event in events:
        p = event["properties"]
        if "$insert_id" in p:
            keys_by_insert_id[p["$insert_id"]].add(
                (event["event"], p.get("distinct_id"), p["time"])
            )
    if any(len(keys) > 1 for keys in keys_by_insert_id.values()):
        found.add("reused_insert_id")
    return found


def test_every_odd_case_is_in_every_day_of_200_events() -> None:
    lines = list(synthetic_day(PROJECT, DAY, events_per_day=400))
    assert odd_cases_in(lines) == set(ODD_CASES)
    for offset in range(1, 4):
        day = list(synthetic_day(PROJECT, DAY - timedelta(days=offset), events_per_day=200))
        assert odd_cases_in(day) == set(ODD_CASES)
    # U+2028 is written raw: str.splitlines() would break that line, a split on b"\n" does not.
    separated = next(line for line in lines if "\u2028".encode() in line)
    assert len(separated.decode().splitlines()) > 1
    assert len(separated.split(b"\n")) == 1


def test_synthetic_events_look_like_real_exports() -> None:
    events = [orjson.loads(line) for line in synthetic_day(PROJECT, DAY, events_per_day=400)]
    names = {e["event"] for e in events}
    assert {
        "$mp_web_page_view",
        "Viewed Product",
        "Added to Cart",
        "Checkout Started",
        "Purchase",
        "Sign Up",
        "App Open",
        "Screen View",
    } <= names
    props = [e["properties"] for e in events]
    assert {p["mp_lib"] for p in props} == {
        "web",
        "android",
        "iphone",
        "Segment: analytics-wordpress",
    }
    assert {type(p["$browser_version"]) for p in props if "$browser_version" in p} == {str, int}
    assert {p["$mp_api_endpoint"] for p in props} == {"api.mixpanel.com", "api-js.mixpanel.com"}
    assert any(p.get("$import") is True for p in props)
    assert any(p["mp_country_code"].islower() for p in props)
    assert all(re.fullmatch("[A-Za-z]{2}", p["mp_country_code"]) for p in props)
    assert all(
        re.fullmatch("[A-Za-z0-9-]{1,36}", p["$insert_id"]) for p in props if "$insert_id" in p
    )
    for p in props:
        if str(p.get("distinct_id")).startswith("$device:"):
            assert p["distinct_id"] == f"$device:{p['$device_id']}" and "$user_id" not in p
        elif "$user_id" in p and "distinct_id" in p:
            assert p["$user_id"] == p["distinct_id"]
        if p["mp_lib"] in ("android", "iphone"):
            assert isinstance(p["$screen_height"], int) and "$app_version_string" in p
            assert {"$model", "$manufacturer", "$device", "$app_release", "$os"} <= p.keys()
    custom = [v for p in props for k, v in p.items() if not k.startswith(("$", "mp_"))]
    assert {type(v) for v in custom} >= {str, int, float, bool, list, dict, type(None)}
    assert any(isinstance(v, list) and v and isinstance(v[0], dict) for v in custom)
    assert max(depth(v) for v in custom) == 3
    assert any(re.fullmatch(r"\d+\.\d\d", str(p.get("item_price"))) for p in props)
    assert any({"utm_source", "utm_medium", "utm_campaign"} <= p.keys() for p in props)


def test_time_is_inside_the_day_and_processing_follows_it() -> None:
    start = datetime(2025, 7, 19, tzinfo=ZoneInfo("UTC")).timestamp()
    for p in props_of(list(synthetic_day(PROJECT, DAY, events_per_day=400))):
        assert start <= p["time"] < start + 86400
        assert 1 <= p["mp_processing_time_ms"] / 1000 - int(p["time"]) < 11
        assert p["time"] * 1000 < p["$mp_api_timestamp_ms"] < p["mp_processing_time_ms"]


def test_project_local_time_encodes_the_wall_clock_across_dst() -> None:
    """On 2025-03-09 New York moves from EST to EDT: both offsets appear, DST-aware."""
    day = date(2025, 3, 9)
    lines = synthetic_day(
        PROJECT, day, events_per_day=400, timezone="America/New_York", time_regime="project_local"
    )
    deltas = {round(p["time"] - p["mp_processing_time_ms"] / 1000) for p in props_of(list(lines))}
    hours = {round(d / 3600) for d in deltas}
    assert hours == {-5, -4}
    zone = ZoneInfo("America/New_York")
    for p in props_of(list(synthetic_day(PROJECT, day, events_per_day=400, timezone=str(zone)))):
        assert datetime.fromtimestamp(int(p["time"]), zone).date() == day  # true instants in day


def test_late_events_are_new_deterministic_and_processed_late() -> None:
    processed_at = 1_800_000_000_000
    late = late_events(PROJECT, DAY, count=20, batch=0, processed_at_ms=processed_at)
    assert late == late_events(PROJECT, DAY, count=20, batch=0, processed_at_ms=processed_at)
    next_batch = late_events(PROJECT, DAY, count=20, batch=1, processed_at_ms=processed_at)
    day_ids = {
        p.get("$insert_id") for p in props_of(list(synthetic_day(PROJECT, DAY, events_per_day=400)))
    }
    late_ids = [p["$insert_id"] for p in props_of(late)]
    assert len(set(late_ids)) == 20
    assert not set(late_ids) & day_ids
    assert not set(late_ids) & {p["$insert_id"] for p in props_of(next_batch)}
    processing = [p["mp_processing_time_ms"] for p in props_of(late)]
    assert processing[0] == processed_at and processing == sorted(set(processing))
    assert processing[-1] - processed_at < 20 * 26
    start = datetime(2025, 7, 19, tzinfo=ZoneInfo("UTC")).timestamp()
    assert all(start <= p["time"] < start + 86400 for p in props_of(late))


# -- the export endpoint ----------------------------------------------------------------------


def test_export_streams_the_day_as_jsonl_over_http_1_1(emulator: MixpanelEmulator) -> None:
    assert emulator.export_url == f"http://127.0.0.1:{emulator.port}/api/2.0/export"
    response = export(emulator)
    assert response.status_code == 200
    assert response.raw.version == 11
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert response.content == body_of(emulator.events_for_day(DAY))
    assert len(split_body(response.content)) == 400


def test_authentication_and_project_errors(emulator: MixpanelEmulator) -> None:
    missing = export(emulator, auth=None)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Basic")
    wrong = export(emulator, auth=(AUTH[0], "not-the-secret"))
    assert wrong.status_code == 400
    assert wrong.headers["Content-Type"] == "application/json"
    assert wrong.json()["error"] == "Unable to authenticate request"
    assert wrong.json()["request"].startswith("/api/2.0/export?project_id=")
    assert export(emulator, project_id="999").status_code == 403
    no_project = export(emulator, project_id=None)
    assert no_project.status_code == 400 and "project_id" in no_project.json()["error"]
    plain = {"Authorization": f"Basic {AUTH[0]}:{AUTH[1]}"}  # Mixpanel also takes plain text
    assert export(emulator, auth=None, headers=plain).status_code == 200


def test_unknown_path_is_a_json_404(emulator: MixpanelEmulator) -> None:
    response = requests.get(emulator.export_url.replace("export", "events"), auth=AUTH, timeout=5)
    assert response.status_code == 404
    assert response.json()["request"] == "/api/2.0/events"
    posted = requests.post(emulator.export_url, data=b"{}", auth=AUTH, timeout=5)
    assert posted.status_code == 404 and "GET" in posted.json()["error"]


def test_date_validation(emulator: MixpanelEmulator) -> None:
    future = export(emulator, to_date=str(TODAY + timedelta(days=1)))
    assert future.status_code == 400
    assert future.json()["error"] == "to_date cannot be later than today"
    assert export(emulator, to_date=str(TODAY)).status_code == 200
    assert export(emulator, from_date="2025-7-19").status_code == 400
    assert export(emulator, from_date="2025-02-30").status_code == 400
    assert export(emulator, from_date=None).status_code == 400
    reversed_range = export(emulator, from_date=str(DAY), to_date=str(DAY - timedelta(days=1)))
    assert reversed_range.status_code == 400


@pytest.mark.parametrize(
    ("regime", "days_zone"), [("project_local", "Pacific/Kiritimati"), ("utc", "UTC")]
)
def test_today_is_the_date_where_export_days_are(regime: str, days_zone: str) -> None:
    """Legacy projects' export days are in their timezone; since 2023 they are UTC days."""
    zone = "Pacific/Kiritimati"  # UTC+14: usually a day ahead of UTC
    with MixpanelEmulator(timezone=zone, time_regime=regime, events_per_day=3) as mp:
        today = datetime.now(ZoneInfo(days_zone)).date()
        assert export(mp, from_date=str(today), to_date=str(today)).status_code == 200
        tomorrow = str(today + timedelta(days=1))
        assert export(mp, from_date=tomorrow, to_date=tomorrow).status_code == 400


def test_a_utc_project_exports_utc_days_whatever_its_timezone() -> None:
    """Mixpanel's reference: for projects created since 2023 from_date/to_date are UTC days."""
    with MixpanelEmulator(
        timezone="America/Los_Angeles", events_per_day=300, today=lambda: TODAY
    ) as mp:
        body = split_body(export(mp, from_date=str(DAY), to_date=str(DAY)).content)
    days = {
        datetime.fromtimestamp(props["time"], ZoneInfo("UTC")).date() for props in props_of(body)
    }
    assert days == {DAY}


def test_date_range_is_inclusive(emulator: MixpanelEmulator) -> None:
    first = DAY - timedelta(days=2)
    response = export(emulator, from_date=str(first))
    expected = [
        line for offset in range(3) for line in emulator.events_for_day(first + timedelta(offset))
    ]
    assert split_body(response.content) == expected
    assert len(expected) == 1200


def test_gzip_is_streamed_in_chunks_that_cut_lines(emulator: MixpanelEmulator) -> None:
    response = export(emulator, headers={"Accept-Encoding": "gzip"}, stream=True)
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Transfer-Encoding"] == "chunked"
    chunks = list(response.raw.read_chunked(decode_content=False))
    assert len(chunks) > 3
    assert {len(chunk) for chunk in chunks[:-1]} == {997}
    inflater = zlib.decompressobj(wbits=31)
    pieces = [inflater.decompress(chunk) for chunk in chunks]
    assert b"".join(pieces) == body_of(emulator.events_for_day(DAY))
    assert any(piece and not piece.endswith(b"\n") for piece in pieces)
    assert emulator.request_log[-1].body_bytes == sum(map(len, chunks))


def test_identity_body_is_chunked_across_lines(emulator: MixpanelEmulator) -> None:
    response = export(emulator, headers={"Accept-Encoding": "identity"}, stream=True)
    assert "Content-Encoding" not in response.headers
    chunks = list(response.raw.read_chunked(decode_content=False))
    assert {len(chunk) for chunk in chunks[:-1]} == {997}
    assert sum(not chunk.endswith(b"\n") for chunk in chunks) > len(chunks) // 2
    # Small bodies are never gzipped, even when gzip is accepted (Mixpanel: over 1400 bytes).
    small = export(emulator, headers={"Accept-Encoding": "gzip"}, limit="1")
    assert "Content-Encoding" not in small.headers
    assert small.content == body_of([next(emulator.events_for_day(DAY))])


def test_empty_day_is_an_empty_200() -> None:
    with MixpanelEmulator(events_per_day=0, today=lambda: TODAY) as mp:
        response = export(mp)
        assert response.status_code == 200
        assert response.content == b""


def test_where_on_processing_time_returns_only_late_events(emulator: MixpanelEmulator) -> None:
    watermark = max(
        p["mp_processing_time_ms"] for p in props_of(list(emulator.events_for_day(DAY)))
    )
    late = emulator.add_late_events(DAY, 5)
    response = export(emulator, where=f"properties[{PROCESSING}] > {watermark}")
    assert split_body(response.content) == late
    processing = [p["mp_processing_time_ms"] for p in props_of(late)]
    between = (
        f"number(properties[{PROCESSING}]) >= {processing[1]}"
        f" and number(properties[{PROCESSING}]) <= {processing[3]}"
    )
    assert split_body(export(emulator, where=between).content) == late[1:4]
    # A second batch is processed after everything before it, and full exports include it.
    more = emulator.add_late_events(DAY, 3)
    assert min(p["mp_processing_time_ms"] for p in props_of(more)) > processing[-1]
    assert split_body(export(emulator).content)[-8:] == late + more
    unsupported = export(emulator, where='properties["$city"] == "Paris"')
    assert unsupported.status_code == 400
    assert "mp_processing_time_ms" in unsupported.json()["error"]


def test_limit_truncates(emulator: MixpanelEmulator) -> None:
    response = export(emulator, from_date=str(DAY - timedelta(days=1)), limit="7")
    assert (
        split_body(response.content) == list(emulator.events_for_day(DAY - timedelta(days=1)))[:7]
    )
    assert export(emulator, limit="100001").status_code == 400
    assert export(emulator, limit="-3").status_code == 400


def test_event_filter(emulator: MixpanelEmulator) -> None:
    wanted = {"Purchase", "Sign Up"}
    response = export(emulator, event=orjson.dumps(sorted(wanted)).decode())
    got = [orjson.loads(line)["event"] for line in split_body(response.content)]
    expected = [
        e for e in (orjson.loads(x)["event"] for x in emulator.events_for_day(DAY)) if e in wanted
    ]
    assert got == expected and set(got) == wanted
    assert export(emulator, event="Purchase").status_code == 400  # not a JSON array


def test_time_in_ms(emulator: MixpanelEmulator) -> None:
    response = export(emulator, time_in_ms="true")
    got = props_of(split_body(response.content))
    expected = props_of(list(emulator.events_for_day(DAY)))
    assert len(got) == len(expected)
    for ms, seconds in zip(got, expected, strict=True):
        assert isinstance(ms["time"], int) and ms["time"] == round(seconds["time"] * 1000)
        assert {**ms, "time": seconds["time"]} == seconds
    assert export(emulator, time_in_ms="yes").status_code == 400


@pytest.mark.parametrize(("day", "hours"), [(DAY, -4), (date(2025, 1, 15), -5)])
def test_project_local_regime_over_http(day: date, hours: int) -> None:
    zone = "America/New_York"
    with MixpanelEmulator(timezone=zone, time_regime="project_local", today=lambda: TODAY) as mp:
        props = props_of(split_body(export(mp, from_date=str(day), to_date=str(day)).content))
    deltas = [p["time"] - p["mp_processing_time_ms"] / 1000 for p in props]
    assert all(hours * 3600 - 11 < d <= hours * 3600 for d in deltas)
    assert round(statistics.median(deltas) / 3600) == hours


# -- faults, rate limits and the log ----------------------------------------------------------


def test_status_faults_in_order_then_normal(emulator: MixpanelEmulator) -> None:
    emulator.queue_fault(Fault("status", status=503, retry_after=7, count=2))
    emulator.queue_fault(Fault("status", status=500))
    emulator.queue_fault(Fault("status", status=502, body="<html>Bad Gateway</html>"))
    for _ in range(2):
        busy = export(emulator)
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "7"
    failed = export(emulator)
    assert failed.status_code == 500 and failed.json()["error"] == "unknown error"
    gateway = export(emulator)
    assert gateway.status_code == 502 and gateway.text == "<html>Bad Gateway</html>"
    assert gateway.headers["Content-Type"].startswith("text/plain")
    assert export(emulator).status_code == 200


def test_terminated_early_fault(emulator: MixpanelEmulator) -> None:
    emulator.queue_fault(Fault("terminated_early", after_lines=5))
    response = export(emulator)
    assert response.status_code == 200
    assert split_body(response.content) == [
        *list(emulator.events_for_day(DAY))[:5],
        b"terminated early",
    ]


def test_reset_fault_breaks_the_stream(emulator: MixpanelEmulator) -> None:
    emulator.queue_fault(Fault("reset", after_bytes=3000))
    response = export(emulator, headers={"Accept-Encoding": "identity"}, stream=True)
    assert response.status_code == 200
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        _ = response.content
    assert emulator.request_log[-1].body_bytes == 3000
    assert export(emulator).status_code == 200  # one request only


def test_corrupt_gzip_fault(emulator: MixpanelEmulator) -> None:
    emulator.queue_fault(Fault("corrupt_gzip", after_bytes=2000))
    with pytest.raises(requests.exceptions.ContentDecodingError):
        export(emulator)
    assert emulator.request_log[-1].status == 200
    assert export(emulator).content == body_of(emulator.events_for_day(DAY))


def test_hourly_rate_limit() -> None:
    with MixpanelEmulator(max_requests_per_hour=2, today=lambda: TODAY, events_per_day=5) as mp:
        assert [export(mp).status_code for _ in range(2)] == [200, 200]
        limited = export(mp)
        assert limited.status_code == 429
        assert limited.json()["error"].startswith(
            f"Query rate limit exceeded for project_id: {PROJECT}."
        )
        assert "3/2" in limited.json()["error"]


def test_per_second_rate_limit_slides() -> None:
    with MixpanelEmulator(max_requests_per_second=1, today=lambda: TODAY, events_per_day=5) as mp:
        assert export(mp).status_code == 200
        assert export(mp).status_code == 429
        time.sleep(1.05)
        assert export(mp).status_code == 200


def test_request_log(emulator: MixpanelEmulator) -> None:
    export(emulator, auth=None)
    ok = export(emulator, headers={"Accept-Encoding": "identity"}, limit="3")
    requests.get(f"http://127.0.0.1:{emulator.port}/nowhere", timeout=5)
    log = emulator.request_log
    assert [(e.path, e.status) for e in log] == [
        ("/api/2.0/export", 401),
        ("/api/2.0/export", 200),
        ("/nowhere", 404),
    ]
    assert log[1].query == {
        "project_id": PROJECT,
        "from_date": str(DAY),
        "to_date": str(DAY),
        "limit": "3",
    }
    assert log[1].body_bytes == len(ok.content)
    assert log[0].monotonic <= log[1].monotonic <= log[2].monotonic
    assert abs(log[2].wall_time - time.time()) < 5
    emulator.clear_request_log()
    assert emulator.request_log == []


def test_stop_closes_the_listening_socket_and_open_connections() -> None:
    mp = MixpanelEmulator(today=lambda: TODAY, events_per_day=5).start()
    url = mp.export_url
    session = requests.Session()
    query = {"project_id": PROJECT, "from_date": str(DAY), "to_date": str(DAY)}
    assert session.get(url, params=query, auth=AUTH, timeout=5).status_code == 200
    mp.stop()
    with pytest.raises(requests.ConnectionError):
        session.get(url, params=query, auth=AUTH, timeout=5)
    with pytest.raises(requests.ConnectionError):
        requests.get(url, params=query, auth=AUTH, timeout=5)
