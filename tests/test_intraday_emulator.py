"""The Mixpanel emulator's clock: an open day grows as its events' processing time passes."""

from datetime import UTC, date, datetime

import orjson
import requests

from mixpanel_assets.sandbox.mixpanel_emulator import EXPORT_PATH, MixpanelEmulator

DAY = date(2026, 11, 20)
NOON = datetime(2026, 11, 20, 12, tzinfo=UTC).timestamp()


def _export(mp: MixpanelEmulator, **params: str) -> list[dict]:
    response = requests.get(
        f"http://127.0.0.1:{mp.port}{EXPORT_PATH}",
        params={"project_id": mp.project_id, "from_date": str(DAY), "to_date": str(DAY), **params},
        auth=("local-sandbox.mp-service-account", "local-sandbox-secret"),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return [orjson.loads(line) for line in response.content.splitlines() if line]


def test_an_event_is_served_once_its_processing_time_has_passed() -> None:
    now = {"seconds": NOON}
    with MixpanelEmulator(events_per_day=400, clock=lambda: now["seconds"]) as mp:
        morning = _export(mp)
        processed = [event["properties"]["mp_processing_time_ms"] for event in morning]
        assert morning and max(processed) <= NOON * 1000
        now["seconds"] = NOON + 3 * 3600
        afternoon = _export(mp)
        assert len(afternoon) > len(morning)
        # The documented where expression selects a processing-time range, bounds included.
        where = (
            f'number(properties["mp_processing_time_ms"]) > {max(processed)} and '
            f'number(properties["mp_processing_time_ms"]) <= {int(NOON * 1000) + 3600_000}'
        )
        later = _export(mp, where=where)
        expected = [
            event
            for event in afternoon
            if max(processed)
            < event["properties"]["mp_processing_time_ms"]
            <= NOON * 1000 + 3600_000
        ]
        assert later == expected and later
        # Tomorrow has not begun on the clock.
        response = requests.get(
            f"http://127.0.0.1:{mp.port}{EXPORT_PATH}",
            params={
                "project_id": mp.project_id,
                "from_date": "2026-11-21",
                "to_date": "2026-11-21",
            },
            auth=("local-sandbox.mp-service-account", "local-sandbox-secret"),
            timeout=30,
        )
        assert response.status_code == 400


def test_a_resent_event_comes_back_with_a_later_processing_time() -> None:
    now = {"seconds": NOON}
    with MixpanelEmulator(events_per_day=50, clock=lambda: now["seconds"]) as mp:
        first = _export(mp)[0]
        now["seconds"] += 60
        (copy,) = mp.add_resent_events(DAY, [orjson.dumps(first)])
        again = orjson.loads(copy)
        assert again["properties"]["mp_processing_time_ms"] >= (NOON + 60) * 1000
        assert {**again["properties"], "mp_processing_time_ms": 0} == {
            **first["properties"],
            "mp_processing_time_ms": 0,
        }
        assert _export(mp)[-1] == again
