"""The three assets end to end on the local sandbox, in a real Dagster instance."""

import gzip
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from dagster import (
    DagsterInstance,
    Definitions,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
    materialize,
)

from mixpanel_assets.mixpanel.resource import MixpanelResource
from mixpanel_assets.pipeline import DAILY_JOB, build_definitions
from mixpanel_assets.sandbox.local_sandbox import LocalSandbox, local_sandbox
from mixpanel_assets.sandbox.mixpanel_emulator import Fault
from mixpanel_assets.settings import ConfigError
from mixpanel_assets.storage import PartitionFiles
from tests.dagster_cli import materialize_command


def _yesterday() -> str:
    return (datetime.now(UTC).date() - timedelta(days=1)).isoformat()


def _materialize(defs: Definitions, day: str, instance: DagsterInstance, **kwargs):
    kwargs.setdefault("resources", defs.resources)
    return materialize(
        [*defs.assets, *defs.asset_checks], partition_key=day, instance=instance, **kwargs
    )


def _metadata(result, asset: str) -> dict:
    (event,) = result.asset_materializations_for_node(asset)
    return {key: value.value for key, value in event.metadata.items()}


def test_a_day_travels_end_to_end(sandbox: LocalSandbox) -> None:
    day = _yesterday()
    defs = build_definitions()
    with instance_for_test() as instance:
        result = _materialize(defs, day, instance)
    assert result.success
    raw = _metadata(result, "mixpanel_raw_events")
    xdm = _metadata(result, "xdm_experience_events")
    aep = _metadata(result, "aep_ingested_batches")

    expected_lines = list(sandbox.mixpanel.events_for_day(date.fromisoformat(day)))
    assert raw["dagster/row_count"] == len(expected_lines)
    with gzip.open(raw["dagster/uri"], "rb") as exported:
        assert exported.read() == b"".join(line + b"\n" for line in expected_lines)

    assert xdm["duplicates_dropped"] > 0 and xdm["quarantined"] > 0
    assert (
        xdm["dagster/row_count"] + xdm["duplicates_dropped"] + xdm["quarantined"]
        == raw["dagster/row_count"]
    )
    assert aep["dagster/row_count"] == xdm["dagster/row_count"]
    assert aep["replaced_batch_ids"] == []

    records = sandbox.platform.dataset_records(sandbox.dataset_id)
    assert len(records) == xdm["dagster/row_count"]
    assert records["_id"].is_unique
    assert set(records["batch_id"]) == set(aep["batch_ids"])

    checks = {check.check_name: check.passed for check in result.get_asset_check_evaluations()}
    assert checks == {
        "required_xdm_fields": True,
        "unique_event_ids": True,
        "counts_reconcile": True,
        "quarantine_share": True,
        "event_time_offset": True,
        "batch_succeeded": True,
    }


def test_re_running_a_day_replaces_its_batch(sandbox: LocalSandbox) -> None:
    day = _yesterday()
    defs = build_definitions()
    with instance_for_test() as instance:
        first = _metadata(_materialize(defs, day, instance), "aep_ingested_batches")
        second = _metadata(_materialize(defs, day, instance), "aep_ingested_batches")
    assert second["replaced_batch_ids"] == first["batch_ids"]
    assert second["batch_ids"] != first["batch_ids"]
    records = sandbox.platform.dataset_records(sandbox.dataset_id)
    assert len(records) == second["dagster/row_count"] == first["dagster/row_count"]
    assert records["_id"].is_unique
    assert set(records["batch_id"]) == set(second["batch_ids"])
    assert sandbox.platform.batch(first["batch_ids"][0])["status"] == "inactive"


def test_the_dagster_cli_moves_a_day(sandbox: LocalSandbox, tmp_path: Path) -> None:
    day = _yesterday()
    home = tmp_path / "dagster_home"
    home.mkdir()
    command = materialize_command("mixpanel_raw_events*", day)
    env = {**sandbox.environment(), "DAGSTER_HOME": str(home), "PATH": "/usr/bin:/bin"}
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    records = sandbox.platform.dataset_records(sandbox.dataset_id)
    assert len(records) > 0 and records["_id"].is_unique
    assert sandbox.environment()["MIXPANEL_SERVICE_ACCOUNT_SECRET"] not in completed.stdout
    assert sandbox.environment()["AEP_CLIENT_SECRET"] not in completed.stdout + completed.stderr


def test_schedule_requests_the_day_that_just_closed(sandbox: LocalSandbox) -> None:
    defs = build_definitions()
    schedule = defs.resolve_schedule_def("daily_ingestion_schedule")
    assert schedule.cron_schedule == "0 1 * * *"
    tick = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
    with (
        instance_for_test() as instance,
        # Closed here: left to the garbage collector, it would reset Dagster's current
        # defs-state storage to this dead instance's in whichever later test it runs.
        build_schedule_context(
            instance=instance,
            scheduled_execution_time=tick,
            repository_def=defs.get_repository_def(),
        ) as context,
    ):
        requests = schedule.evaluate_tick(context).run_requests
    assert [request.partition_key for request in requests] == ["2026-11-19"]
    assert schedule.job_name == DAILY_JOB


def test_sensor_re_runs_only_days_with_late_events(sandbox: LocalSandbox) -> None:
    late_day = datetime.now(UTC).date() - timedelta(days=2)
    quiet_day = late_day + timedelta(days=1)
    defs = build_definitions()
    sensor = defs.resolve_sensor_def("late_events_sensor")
    with instance_for_test() as instance:
        for day in (late_day, quiet_day):
            assert _materialize(defs, day.isoformat(), instance).success
        context = build_sensor_context(
            instance=instance, definitions=defs, resources=defs.resources
        )
        first = sensor.evaluate_tick(context)
        assert first.run_requests == []

        sandbox.mixpanel.add_late_events(late_day, 3)
        context = build_sensor_context(
            instance=instance, cursor=first.cursor, definitions=defs, resources=defs.resources
        )
        second = sensor.evaluate_tick(context)
        assert [request.partition_key for request in second.run_requests] == [late_day.isoformat()]

        context = build_sensor_context(
            instance=instance, cursor=second.cursor, definitions=defs, resources=defs.resources
        )
        assert sensor.evaluate_tick(context).run_requests == []

        # The requested re-run fails: the day is asked about, and requested, again.
        sandbox.mixpanel.queue_fault(Fault(kind="terminated_early", count=2))
        failed = _materialize(
            defs,
            late_day.isoformat(),
            instance,
            resources=_impatient(defs),
            tags={"mixpanel_assets/trigger": "late_events"},
            raise_on_error=False,
        )
        assert not failed.success
        context = build_sensor_context(
            instance=instance, cursor=second.cursor, definitions=defs, resources=defs.resources
        )
        (retry,) = sensor.evaluate_tick(context).run_requests
        assert retry.partition_key == late_day.isoformat()
        assert retry.run_key.endswith(f"retry-of-{failed.run_id[:8]}")


def test_a_day_mapped_from_an_older_export_is_not_loaded(sandbox: LocalSandbox) -> None:
    day = _yesterday()
    defs = build_definitions()
    raw, aep = (
        next(asset for asset in defs.assets if asset.key.path == [name])
        for name in ("mixpanel_raw_events", "aep_ingested_batches")
    )
    with instance_for_test() as instance:
        assert _materialize(defs, day, instance).success
        held = len(sandbox.platform.dataset_records(sandbox.dataset_id))
        sandbox.mixpanel.add_late_events(date.fromisoformat(day), 3)
        assert materialize(
            [raw], partition_key=day, instance=instance, resources=defs.resources
        ).success
        stale = materialize(
            [aep],
            partition_key=day,
            instance=instance,
            resources=defs.resources,
            raise_on_error=False,
        )
    assert not stale.success
    failure = next(event for event in stale.all_events if event.is_step_failure)
    assert "mapped from an earlier raw export" in str(failure.step_failure_data.error)
    assert len(sandbox.platform.dataset_records(sandbox.dataset_id)) == held


def test_missing_required_variable_is_named(
    sandbox: LocalSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AEP_CLIENT_SECRET")
    defs = build_definitions()
    with instance_for_test() as instance, pytest.raises(Exception, match="AEP_CLIENT_SECRET"):
        _materialize(defs, _yesterday(), instance)


def test_missing_start_date_fails_the_load_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="MIXPANEL_START_DATE is not set"):
        build_definitions()
    monkeypatch.setenv("MIXPANEL_START_DATE", "01/11/2026")
    with pytest.raises(ConfigError, match="MIXPANEL_START_DATE='01/11/2026' is not a date"):
        build_definitions()


def test_bad_region_fails_the_run_naming_the_variable(
    sandbox: LocalSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MIXPANEL_EXPORT_URL")
    monkeypatch.setenv("MIXPANEL_REGION", "APAC")
    defs = build_definitions()
    with instance_for_test() as instance:
        result = _materialize(defs, _yesterday(), instance, raise_on_error=False)
    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure)
    assert "MIXPANEL_REGION='APAC'" in str(failure.step_failure_data.error)


def _impatient(defs: Definitions) -> dict:
    """The definitions' resources, with a Mixpanel client that gives up after two quick tries."""
    mixpanel = MixpanelResource.from_env(max_attempts=2, retry_base_seconds=0.01, step_retries=0)
    return {**defs.resources, "mixpanel": mixpanel}


def test_an_export_that_keeps_failing_publishes_nothing(sandbox: LocalSandbox) -> None:
    day = _yesterday()
    defs = build_definitions()
    raw = PartitionFiles(data_dir=str(sandbox.data_dir)).folder("mixpanel_raw_events", day)
    with instance_for_test() as instance:
        assert _materialize(defs, day, instance, resources=_impatient(defs)).success
        published = raw.manifest()
        sandbox.mixpanel.queue_fault(Fault(kind="terminated_early", count=2, after_lines=50))
        result = _materialize(defs, day, instance, resources=_impatient(defs), raise_on_error=False)
    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure)
    assert "terminated early" in str(failure.step_failure_data.error)
    assert raw.manifest() == published, "the earlier complete export stays the partition"
    assert sorted(raw.store.names()) == sorted(["manifest.json", *published["files"].values()])


def test_a_legacy_project_in_local_time_lands_on_the_right_instants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zone = ZoneInfo("America/New_York")
    day = datetime.now(zone).date() - timedelta(days=1)
    with local_sandbox(
        tmp_path / "data", timezone="America/New_York", time_regime="project_local"
    ) as legacy:
        for name, value in legacy.environment().items():
            monkeypatch.setenv(name, value)
        defs = build_definitions()
        with instance_for_test() as instance:
            assert _materialize(defs, day.isoformat(), instance).success
        records = legacy.platform.dataset_records(legacy.dataset_id)
    start = datetime.combine(day, datetime.min.time(), zone)
    instants = [datetime.fromisoformat(stamp) for stamp in records["timestamp"]]
    assert len(instants) > 0
    assert all(start <= instant < start + timedelta(days=1) for instant in instants)


def test_automation_settings_come_from_the_environment(
    sandbox: LocalSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIXPANEL_ASSETS_SETTLE_MINUTES", "150")
    monkeypatch.setenv("MIXPANEL_ASSETS_LATE_CHECK_MINUTES", "15")
    defs = build_definitions()
    assert defs.resolve_schedule_def("daily_ingestion_schedule").cron_schedule == "30 2 * * *"
    assert defs.resolve_sensor_def("late_events_sensor").minimum_interval_seconds == 900
    monkeypatch.setenv("MIXPANEL_ASSETS_LATE_DAYS", "many")
    with pytest.raises(ConfigError, match="MIXPANEL_ASSETS_LATE_DAYS='many' is not valid"):
        build_definitions()
