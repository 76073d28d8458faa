"""The late-events sensor never blocks, and gives up on a day whose re-runs keep failing."""

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    DagsterRunStatus,
    build_sensor_context,
    instance_for_test,
)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.test_utils import create_run_for_test

from mixpanel_assets.coordination import coordinator
from mixpanel_assets.mixpanel import sensors
from mixpanel_assets.mixpanel.assets import WATERMARK
from mixpanel_assets.mixpanel.rate_budget import RateBudget
from mixpanel_assets.mixpanel.resource import MixpanelResource
from mixpanel_assets.mixpanel.sensors import PARTITION_TAG, TRIGGER_TAG
from mixpanel_assets.pipeline import DAILY_JOB, build_definitions
from mixpanel_assets.sandbox.local_sandbox import LocalSandbox
from mixpanel_assets.sandbox.mixpanel_emulator import Fault

DAY = (datetime.now(UTC).date() - timedelta(days=2)).isoformat()


def _loaded(instance: DagsterInstance, key: str, watermark: int = 0) -> None:
    """The day reached AEP carrying ``watermark`` (0: every event of the day is late)."""
    instance.report_runless_asset_event(
        AssetMaterialization("aep_ingested_batches", partition=key, metadata={WATERMARK: watermark})
    )


def _tick(defs, instance: DagsterInstance, cursor: str | None = None):
    sensor = defs.resolve_sensor_def("late_events_sensor")
    # Closed at once: resources left open are finalised later, at a moment that can reset
    # Dagster's current-instance context under another test.
    with build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, resources=defs.resources
    ) as context:
        return sensor.evaluate_tick(context)


def _failed_rerun(instance: DagsterInstance, key: str) -> None:
    create_run_for_test(
        instance,
        job_name=DAILY_JOB,
        status=DagsterRunStatus.FAILURE,
        tags={PARTITION_TAG: key, TRIGGER_TAG: "late_events"},
    )


@pytest.mark.timeout(60)
def test_a_rate_limited_probe_skips_at_once_and_the_next_tick_works(
    sandbox: LocalSandbox,
) -> None:
    defs = build_definitions()
    with instance_for_test() as instance:
        _loaded(instance, DAY)
        sandbox.mixpanel.queue_fault(Fault(kind="status", status=429, retry_after=3600))
        started = time.monotonic()
        limited = _tick(defs, instance)
        assert time.monotonic() - started < 10
        assert limited.run_requests == []
        assert "rate-limited" in limited.skip_message
        assert "retry after 300 s" in limited.skip_message  # Mixpanel's 3600 s, capped
        assert len(sandbox.mixpanel.request_log) == 1  # one attempt, no retry

        recovered = _tick(defs, instance, limited.cursor)
    assert [request.partition_key for request in recovered.run_requests] == [DAY]


@pytest.mark.timeout(60)
def test_a_tick_never_waits_for_the_rate_budget(sandbox: LocalSandbox) -> None:
    defs = build_definitions(mixpanel=MixpanelResource.from_env(queries_per_hour=1))
    with instance_for_test() as instance:
        _loaded(instance, DAY)
        budget = f"mixpanel-export-budget-{sandbox.mixpanel.project_id}"
        RateBudget(coordinator(""), budget, per_hour=1).reserve()  # a run took the hour's query
        started = time.monotonic()
        result = _tick(defs, instance)
        assert time.monotonic() - started < 10
    assert result.run_requests == []
    assert "rate-limited" in result.skip_message and "rate budget" in result.skip_message
    assert sandbox.mixpanel.request_log == []


@pytest.mark.timeout(60)
def test_an_unavailable_mixpanel_costs_one_quick_attempt_per_day(sandbox: LocalSandbox) -> None:
    """No retries, no Retry-After waits: the tick ends well inside Dagster's 60 s."""
    defs = build_definitions(
        mixpanel=MixpanelResource.from_env(read_timeout_seconds=600, max_attempts=5)
    )
    days = [(datetime.now(UTC).date() - timedelta(days=offset)).isoformat() for offset in (2, 3)]
    with instance_for_test() as instance:
        for key in days:
            _loaded(instance, key)
        sandbox.mixpanel.queue_fault(Fault(kind="status", status=503, retry_after=600, count=4))
        started = time.monotonic()
        result = _tick(defs, instance)
        assert time.monotonic() - started < 10
    assert result.run_requests == []
    assert "probes failed" in result.skip_message
    assert len(sandbox.mixpanel.request_log) == 2  # one attempt per day


def test_a_day_whose_re_runs_keep_failing_is_asked_a_bounded_number_of_times(
    sandbox: LocalSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIXPANEL_ASSETS_LATE_MAX_RERUNS", "3")
    monkeypatch.setenv("MIXPANEL_ASSETS_LATE_DAYS", "3")
    defs = build_definitions()
    with instance_for_test() as instance:
        _loaded(instance, DAY)
        first = _tick(defs, instance)
        assert [request.partition_key for request in first.run_requests] == [DAY]

        _failed_rerun(instance, DAY)
        second = _tick(defs, instance, first.cursor)
        assert [request.partition_key for request in second.run_requests] == [DAY]

        _failed_rerun(instance, DAY)
        paused = _tick(defs, instance, second.cursor)
        assert paused.run_requests == []
        assert f"failed re-runs of {DAY} are asked again after a pause" in paused.skip_message

        cursor = json.loads(paused.cursor)
        cursor[DAY]["not_before"] = 0  # the pause (one sensor interval) is over
        third = _tick(defs, instance, json.dumps(cursor))
        assert [request.partition_key for request in third.run_requests] == [DAY]

        _failed_rerun(instance, DAY)
        given_up = _tick(defs, instance, third.cursor)
        for event in given_up.asset_events:  # as the sensor daemon does
            instance.report_runless_asset_event(event)
        (recorded,) = instance.event_log_storage.get_asset_check_execution_history(
            AssetCheckKey(AssetKey("aep_ingested_batches"), "late_events_reloaded"), limit=5
        )
        assert recorded.status == AssetCheckExecutionRecordStatus.FAILED
        again = _tick(defs, instance, given_up.cursor)

        _loaded(instance, DAY, watermark=1)  # re-run by hand: the day is whole again
        whole = _tick(defs, instance, again.cursor)

    assert given_up.run_requests == [] and again.run_requests == []
    assert f"gave up on {DAY} after 3 failed re-runs" in given_up.skip_message
    assert f"gave up on {DAY} after" in again.skip_message
    (verdict,) = given_up.asset_events
    assert isinstance(verdict, AssetCheckEvaluation)
    assert verdict.check_name == "late_events_reloaded" and verdict.partition == DAY
    assert not verdict.passed and DAY in verdict.description
    assert again.asset_events == []  # reported once
    (healed,) = [event for event in whole.asset_events if isinstance(event, AssetCheckEvaluation)]
    assert healed.passed and healed.partition == DAY


def test_a_bad_max_reruns_fails_the_load_naming_the_variable(
    sandbox: LocalSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIXPANEL_ASSETS_LATE_MAX_RERUNS", "0")
    with pytest.raises(Exception, match="MIXPANEL_ASSETS_LATE_MAX_RERUNS='0' is not valid"):
        build_definitions()


def test_days_left_unprobed_for_lack_of_time_go_to_the_next_tick(
    sandbox: LocalSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    defs = build_definitions()
    with instance_for_test() as instance:
        _loaded(instance, DAY)
        tick_seconds = sensors.TICK_SECONDS
        monkeypatch.setattr(sensors, "TICK_SECONDS", sensors.PROBE_SECONDS)  # no time to probe
        hurried = _tick(defs, instance)
        assert hurried.run_requests == []
        assert f"out of time before probing {DAY}" in hurried.skip_message
        assert sandbox.mixpanel.request_log == []
        monkeypatch.setattr(sensors, "TICK_SECONDS", tick_seconds)
        unhurried = _tick(defs, instance, hurried.cursor)
    assert [request.partition_key for request in unhurried.run_requests] == [DAY]


@pytest.mark.timeout(60)
def test_a_tick_that_requests_nothing_says_why(
    sandbox: LocalSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIXPANEL_ASSETS_LATE_DAYS", "3")
    defs = build_definitions()
    keys = [(datetime.now(UTC).date() - timedelta(days=n)).isoformat() for n in (3, 2, 1)]
    span = f"{keys[0]}..{keys[-1]}"
    with instance_for_test() as instance:
        nothing_loaded = _tick(defs, instance)
        assert sandbox.mixpanel.request_log == []
        _loaded(instance, DAY, watermark=2**62)  # every event of the day is older than that
        settled = _tick(defs, instance, nothing_loaded.cursor)
        _loaded(instance, DAY)  # now every event of the day is late: a re-run is requested
        requested = _tick(defs, instance, settled.cursor)
        pending = _tick(defs, instance, requested.cursor)
    assert nothing_loaded.run_requests == []
    assert nothing_loaded.skip_message == (
        f"probed no day of {span}; none of them has been loaded into aep_ingested_batches "
        "yet, and only loaded days are probed"
    )
    assert settled.skip_message == (
        f"probed {DAY}: no late events, nothing to re-run; {keys[0]}, {keys[2]} not loaded "
        "into aep_ingested_batches yet"
    )
    assert [request.partition_key for request in requested.run_requests] == [DAY]
    assert pending.skip_message.startswith(f"probed no day of {span}; ")
    assert (
        f"late-events re-runs of {DAY} are queued, running or landed without a new watermark"
        in pending.skip_message
    )
