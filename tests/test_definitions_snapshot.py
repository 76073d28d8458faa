"""The code location's shape (assets, checks, jobs, schedules, sensors, resources) against a
committed snapshot: a change to it shows in review. Refresh with UPDATE_SNAPSHOT=1."""

import json
import os
from pathlib import Path

import pytest
from dagster import Definitions

from mixpanel_assets.pipeline import build_definitions

SNAPSHOT = Path(__file__).with_name("snapshots") / "definitions.json"


def shape(defs: Definitions) -> dict:
    """What a reader of the code location sees, without run-time values."""
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda item: item.to_user_string()):
        node = graph.get(key)
        partitions = node.partitions_def
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(parent.to_user_string() for parent in node.parent_keys),
            "kinds": sorted(node.kinds),
            "partitions": None
            if partitions is None
            else {
                "type": type(partitions).__name__,
                "timezone": getattr(partitions, "timezone", None),
                "cron": getattr(partitions, "cron_schedule", None),
            },
            "pools": sorted(node.pools or []),
            "owners": list(node.owners),
            "freshness": None if node.freshness_policy is None else repr(node.freshness_policy),
            "checks": sorted(check.name for check in graph.get_check_keys_for_assets({key})),
        }
    checks = {}
    for check_key in sorted(graph.asset_check_keys, key=str):
        spec = graph.get_check_spec(check_key)
        checks[f"{check_key.asset_key.to_user_string()}:{check_key.name}"] = {
            "blocking": spec.blocking
        }
    return {
        "assets": assets,
        "asset_checks": checks,
        "jobs": sorted(job.name for job in defs.resolve_all_job_defs()),
        "schedules": {
            schedule.name: {
                "cron": schedule.cron_schedule,
                "timezone": schedule.execution_timezone,
                "job": schedule.job_name,
                "default_status": schedule.default_status.value,
            }
            for schedule in sorted(
                (defs.resolve_schedule_def(item.name) for item in defs.schedules or []),
                key=lambda item: item.name,
            )
        },
        "sensors": {
            sensor.name: {
                "interval_seconds": sensor.minimum_interval_seconds,
                "default_status": sensor.default_status.value,
            }
            for sensor in sorted(
                (defs.resolve_sensor_def(item.name) for item in defs.sensors or []),
                key=lambda item: item.name,
            )
        },
        "resources": {
            name: type(resource).__name__ for name, resource in sorted(defs.resources.items())
        },
    }


def test_the_definitions_match_the_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIXPANEL_START_DATE", "2026-11-01")
    found = shape(build_definitions())
    if os.environ.get("UPDATE_SNAPSHOT"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(json.dumps(found, indent=2, sort_keys=True) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    assert found == expected, "the definitions changed: review, then UPDATE_SNAPSHOT=1 pytest ..."
