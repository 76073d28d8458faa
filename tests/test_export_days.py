"""Export days as Mixpanel defines them: UTC days for projects created since 2023, whatever
their timezone; project-local days for legacy projects. Partitions follow them."""

import gzip
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from dagster import instance_for_test, materialize

from mixpanel_assets.errors import ConfigError
from mixpanel_assets.mixpanel.export_client import ExportQuery
from mixpanel_assets.mixpanel.resource import MixpanelResource
from mixpanel_assets.pipeline import build_definitions
from mixpanel_assets.sandbox.local_sandbox import LocalSandbox, local_sandbox
from mixpanel_assets.sandbox.mixpanel_emulator import MixpanelEmulator

LOS_ANGELES = "America/Los_Angeles"
USERNAME, SECRET = "svc.mp-service-account", "s3cr3t-value"


def _resource(emulator: MixpanelEmulator, **overrides: object) -> MixpanelResource:
    return MixpanelResource(
        project_id=emulator.project_id,
        service_account_username=USERNAME,
        service_account_secret=SECRET,
        export_url=emulator.export_url,
        project_timezone=emulator.timezone,
        event_time=emulator.time_regime,
        **overrides,
    )


@pytest.mark.parametrize("regime", ["utc", "project_local"])
def test_a_14_day_block_is_one_request_split_into_the_projects_export_days(
    regime: str, tmp_path: Path
) -> None:
    """A Los Angeles project's block splits cleanly, whichever time regime it has."""
    first = date(2026, 10, 20)  # a DST change inside the block for the legacy regime
    days = [first + timedelta(days=offset) for offset in range(14)]
    with MixpanelEmulator(
        username=USERNAME,
        secret=SECRET,
        timezone=LOS_ANGELES,
        time_regime=regime,
        events_per_day=120,
        today=lambda: date(2026, 11, 20),
    ) as emulator:
        mixpanel = _resource(emulator, coordination_url="")
        client = mixpanel.get_client()
        destinations = {day: tmp_path / f"{day}.jsonl.gz" for day in days}
        summaries = client.export_days_to_files(
            ExportQuery(days[0], days[-1]), destinations, mixpanel.export_day_of
        )
        assert len(emulator.request_log) == 1
        for day in days:
            with gzip.open(destinations[day], "rb") as stored:
                assert stored.read().splitlines() == list(emulator.events_for_day(day))
            assert summaries[day].line_count > 0


def test_the_export_days_zone_is_utc_unless_the_project_is_legacy() -> None:
    modern = MixpanelResource(
        project_id="1",
        service_account_username="u",
        service_account_secret="s",
        project_timezone=LOS_ANGELES,
    )
    legacy = modern.model_copy(update={"event_time": "project_local"})
    assert modern.export_timezone() == "UTC"
    assert legacy.export_timezone() == LOS_ANGELES
    assert modern.export_day_of(1_700_000_000) == date(2023, 11, 14)  # 22:13 UTC, 14:13 in LA


@pytest.mark.parametrize(("regime", "zone"), [("utc", "UTC"), ("project_local", LOS_ANGELES)])
def test_the_partitions_are_the_export_days(
    regime: str, zone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIXPANEL_START_DATE", "2026-01-01")
    monkeypatch.setenv("MIXPANEL_PROJECT_TIMEZONE", LOS_ANGELES)
    monkeypatch.setenv("MIXPANEL_EVENT_TIME", regime)
    defs = build_definitions()
    partitions = defs.resolve_assets_def("mixpanel_raw_events").partitions_def
    assert partitions.timezone == zone
    schedule = defs.resolve_schedule_def("daily_ingestion_schedule")
    assert schedule.execution_timezone == zone


def test_a_bad_event_time_fails_the_load_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MIXPANEL_START_DATE", "2026-01-01")
    monkeypatch.setenv("MIXPANEL_EVENT_TIME", "local")
    with pytest.raises(ConfigError, match=r"MIXPANEL_EVENT_TIME='local' is not valid"):
        build_definitions()


def test_a_los_angeles_utc_project_files_each_utc_day_under_its_own_label(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with local_sandbox(tmp_path / "data", events_per_day=150, timezone=LOS_ANGELES) as sandbox:
        for name, value in sandbox.environment().items():
            monkeypatch.setenv(name, value)
        day = datetime.now(UTC).date() - timedelta(days=1)
        _materialize_raw(sandbox, day)
        (request,) = sandbox.mixpanel.request_log
    assert request.query["from_date"] == request.query["to_date"] == day.isoformat()


def test_a_run_whose_settings_disagree_with_the_partitions_spends_no_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with local_sandbox(tmp_path / "data", events_per_day=50, timezone=LOS_ANGELES) as sandbox:
        for name, value in sandbox.environment().items():
            monkeypatch.setenv(name, value)
        defs = build_definitions()  # UTC partitions
        monkeypatch.setenv("MIXPANEL_EVENT_TIME", "project_local")  # changed after the load
        day = datetime.now(UTC).date() - timedelta(days=2)
        with instance_for_test() as instance:
            result = materialize(
                defs.assets,
                selection="mixpanel_raw_events",
                partition_key=day.isoformat(),
                resources=defs.resources,
                instance=instance,
                raise_on_error=False,
            )
        assert not result.success
        assert sandbox.mixpanel.request_log == []
    failure = result.failure_data_for_node("mixpanel_raw_events")
    assert "MIXPANEL_EVENT_TIME" in str(failure.error)


def _materialize_raw(sandbox: LocalSandbox, day: date) -> None:
    defs = build_definitions()
    with instance_for_test() as instance:
        result = materialize(
            defs.assets,
            selection="mixpanel_raw_events",
            partition_key=day.isoformat(),
            resources=defs.resources,
            instance=instance,
        )
    assert result.success
    (event,) = result.asset_materializations_for_node("mixpanel_raw_events")
    with gzip.open(event.metadata["dagster/uri"].value, "rb") as stored:
        assert stored.read().splitlines() == list(sandbox.mixpanel.events_for_day(day))


def test_a_utc_project_read_as_project_local_is_told_to_set_utc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with local_sandbox(tmp_path / "data", events_per_day=200, timezone=LOS_ANGELES) as sandbox:
        for name, value in sandbox.environment().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("MIXPANEL_EVENT_TIME", "project_local")  # the mistake
        defs = build_definitions()
        day = datetime.now(ZoneInfo(LOS_ANGELES)).date() - timedelta(days=2)
        with instance_for_test() as instance:
            result = materialize(
                [*defs.assets, *defs.asset_checks],
                selection=["mixpanel_raw_events", "xdm_experience_events"],
                partition_key=day.isoformat(),
                resources=defs.resources,
                instance=instance,
                raise_on_error=False,
            )
    checks = {check.check_name: check for check in result.get_asset_check_evaluations()}
    offset = checks["event_time_offset"]
    assert not offset.passed
    assert "set MIXPANEL_EVENT_TIME=utc" in offset.description
    assert "docs/upgrading.md" in offset.description
