"""Several Mixpanel projects in one code location, on the local sandbox: one shared dataset."""

import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from dagster import (
    AssetKey,
    DagsterInstance,
    DagsterInvalidConfigError,
    build_sensor_context,
    instance_for_test,
    materialize,
)

from mixpanel_assets.aep.assets import AEP_DAY_TAG
from mixpanel_assets.aep.resource import client_from_environment
from mixpanel_assets.coordination import coordinator
from mixpanel_assets.mixpanel.backfill_batching import BACKFILL_TAG
from mixpanel_assets.mixpanel.resource import MixpanelResource
from mixpanel_assets.pipeline import build_definitions
from mixpanel_assets.projects import PROJECT_TAG, PROJECTS_VARIABLE, load_projects
from mixpanel_assets.sandbox.local_sandbox import (
    EXAMPLE_PROJECTS_FILE,
    LocalSandbox,
    local_sandbox,
    project_credentials,
)
from mixpanel_assets.settings import ConfigError
from mixpanel_assets.xdm.spec import DEFAULT_MAPPING_FILE
from tests.dagster_cli import DAGSTER, materialize_command

WEB, APP = "3141592", "2718281"  # the example file's project ids
CHAIN = ("mixpanel_raw_events", "xdm_experience_events", "aep_ingested_batches")


@pytest.fixture
def two_projects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalSandbox]:
    """The example projects file on the local sandbox: two emulators, one AEP dataset."""
    with local_sandbox(
        tmp_path / "data",
        events_per_day=300,
        processing_seconds=0.05,
        projects_file=EXAMPLE_PROJECTS_FILE,
    ) as started:
        for name, value in started.environment().items():
            monkeypatch.setenv(name, value)
        yield started


def _days(count: int) -> list[str]:
    today = datetime.now(UTC).date()
    return [(today - timedelta(days=back)).isoformat() for back in range(count, 0, -1)]


def _run(defs, project: str, day: str, instance: DagsterInstance, tags=None) -> dict:
    """The project's daily job for ``day``; the batches asset's metadata."""
    job = defs.resolve_job_def(f"{project}_daily_ingestion_job")
    result = job.execute_in_process(partition_key=day, instance=instance, tags=tags)
    assert result.success
    (event,) = result.asset_materializations_for_node(f"{project}__aep_ingested_batches")
    return {key: value.value for key, value in event.metadata.items()}


def _live_batches(sandbox: LocalSandbox) -> set[str]:
    return set(sandbox.platform.dataset_records(sandbox.dataset_id)["batch_id"])


def test_each_project_has_its_own_prefixed_chain_and_automation(two_projects) -> None:
    defs = build_definitions()
    keys = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    assert keys == {f"{project}/{asset}" for project in ("web", "app") for asset in CHAIN}
    assert {job.name for job in defs.resolve_all_job_defs()} >= {
        "web_daily_ingestion_job",
        "app_daily_ingestion_job",
    }
    assert {schedule.name for schedule in defs.schedules} == {
        "web_daily_ingestion_schedule",
        "app_daily_ingestion_schedule",
        "web_intraday_ingestion_schedule",
        "app_intraday_ingestion_schedule",
    }
    assert {sensor.name for sensor in defs.sensors} == {
        "web_late_events_sensor",
        "app_late_events_sensor",
    }
    assert defs.resolve_job_def("web_daily_ingestion_job").tags[PROJECT_TAG] == "web"
    graph = defs.resolve_asset_graph()
    assert graph.get(AssetKey(["app", CHAIN[2]])).group_name == "app_mixpanel_to_aep"
    assert graph.get(AssetKey(["app", CHAIN[1]])).parent_keys == {AssetKey(["app", CHAIN[0]])}
    checks = {(key.asset_key.to_user_string(), key.name) for key in graph.asset_check_keys}
    assert ("web/xdm_experience_events", "unique_event_ids") in checks
    assert ("app/aep_ingested_batches", "batch_succeeded") in checks
    # Mixpanel, mapping and files are the project's; the AEP credential is shared.
    assert defs.resources["web_mixpanel"].project_id == WEB
    assert defs.resources["app_mixpanel"].project_id == APP
    assert "aep" in defs.resources and "web_aep" not in defs.resources


def test_two_projects_land_in_one_dataset_and_a_rerun_replaces_only_its_own(
    two_projects: LocalSandbox,
) -> None:
    day = _days(1)[0]
    defs = build_definitions()
    with instance_for_test() as instance:
        web = _run(defs, "web", day, instance)
        app = _run(defs, "app", day, instance)
        records = two_projects.platform.dataset_records(two_projects.dataset_id)
        assert len(records) == web["dagster/row_count"] + app["dagster/row_count"]
        assert records["_id"].is_unique
        assert _live_batches(two_projects) == {*web["batch_ids"], *app["batch_ids"]}
        for project_id, loaded in ((WEB, web), (APP, app)):
            (batch_id,) = loaded["batch_ids"]
            tags = two_projects.platform.batch(batch_id)["tags"]
            assert tags[AEP_DAY_TAG] == [f"{project_id}/{day}"]
        # Each project's files live under its own folder.
        data = two_projects.data_dir
        assert (data / "web" / "mixpanel_raw_events" / day / "manifest.json").is_file()
        assert (data / "app" / "aep_ingested_batches" / day / "manifest.json").is_file()

        # web's day again, in a backfill run (with no backfill recorded by Dagster, each day is
        # exported on its own): it replaces web's batch and leaves app's live.
        backfill = {BACKFILL_TAG: "web-again"}
        before = _run(defs, "web", _days(2)[0], instance, tags=backfill)
        again = _run(defs, "web", day, instance, tags=backfill)
    last = two_projects.projects["web"].request_log[-1].query
    assert (last["from_date"], last["to_date"]) == (day, day)
    assert all(
        entry.query["project_id"] == APP for entry in two_projects.projects["app"].request_log
    )
    assert again["replaced_batch_ids"] == web["batch_ids"]
    live = {*before["batch_ids"], *again["batch_ids"], *app["batch_ids"]}
    assert _live_batches(two_projects) == live
    assert two_projects.platform.batch(app["batch_ids"][0])["status"] == "success"
    records = two_projects.platform.dataset_records(two_projects.dataset_id)
    loaded = (before, again, app)
    assert len(records) == sum(batches["dagster/row_count"] for batches in loaded)
    assert records["_id"].is_unique


def test_the_dagster_cli_moves_one_projects_day_by_its_prefix(
    two_projects: LocalSandbox, tmp_path: Path
) -> None:
    day = _days(1)[0]
    command = materialize_command("web/mixpanel_raw_events*", day)
    env = {**two_projects.environment(), "DAGSTER_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    (batch,) = _live_batches(two_projects)
    assert two_projects.platform.batch(batch)["tags"][AEP_DAY_TAG] == [f"{WEB}/{day}"]
    assert two_projects.projects["app"].request_log == []
    assert "local-sandbox-secret-web" not in completed.stdout + completed.stderr


def test_a_project_maps_with_its_own_file_into_its_own_dataset(
    two_projects: LocalSandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    schema = two_projects.provisioned.schema_id
    own_dataset = client_from_environment().create_dataset("app events", schema, "")
    own_mapping = tmp_path / "app-mapping.yaml"
    own_mapping.write_text(DEFAULT_MAPPING_FILE.read_text())
    document = yaml.safe_load(two_projects.projects_file.read_text())
    document["projects"]["app"].update(dataset_id=own_dataset, mapping=own_mapping.name)
    projects_file = tmp_path / "projects.yaml"
    projects_file.write_text(yaml.safe_dump(document))
    monkeypatch.setenv(PROJECTS_VARIABLE, str(projects_file))
    day = _days(1)[0]
    defs = build_definitions()
    with instance_for_test() as instance:
        web, app = (_run(defs, project, day, instance) for project in ("web", "app"))
        xdm = {
            project: instance.fetch_materializations(
                AssetKey([project, "xdm_experience_events"]), limit=1
            ).records[0]
            for project in ("web", "app")
        }
    mapping_used = {
        project: record.asset_materialization.metadata["mapping_file"].value
        for project, record in xdm.items()
    }
    assert mapping_used == {"web": str(DEFAULT_MAPPING_FILE), "app": str(own_mapping)}
    shared = two_projects.platform.dataset_records(two_projects.dataset_id)
    own = two_projects.platform.dataset_records(own_dataset)
    assert set(shared["batch_id"]) == set(web["batch_ids"])
    assert set(own["batch_id"]) == set(app["batch_ids"])
    assert len(own) == app["dagster/row_count"] and own["_id"].is_unique


def test_one_projects_backfill_spends_only_its_own_mixpanel_budget(
    two_projects: LocalSandbox,
) -> None:
    days = _days(3)
    # One query per day, and an hour's budget of exactly the backfill's three queries.
    defs = build_definitions(mixpanel_settings={"days_per_request": 1, "queries_per_hour": 3})
    with instance_for_test() as instance:
        budgets = coordinator("")  # where the runs' budgets are: under this instance's home
        for day in days:
            _run(defs, "web", day, instance, tags={BACKFILL_TAG: "web-backfill"})
        with budgets.update_state(f"mixpanel-export-budget-{WEB}") as state:
            assert len(state.value) == 3
        with budgets.update_state(f"mixpanel-export-budget-{APP}") as state:
            assert state.value is None  # app's budget is untouched
        assert two_projects.projects["app"].request_log == []
        # web's hour is spent; app's day still goes at once (a shared budget would wait ~1 h).
        started = datetime.now(UTC)
        app = _run(defs, "app", days[-1], instance)
    assert (datetime.now(UTC) - started).total_seconds() < 60
    assert app["dagster/row_count"] > 0
    assert len(two_projects.projects["web"].request_log) == 3


def test_late_events_re_run_only_their_own_projects_day(two_projects: LocalSandbox) -> None:
    day = _days(2)[0]
    defs = build_definitions()
    with instance_for_test() as instance:
        for project in ("web", "app"):
            _run(defs, project, day, instance)
        two_projects.projects["web"].add_late_events(datetime.fromisoformat(day).date(), 3)
        requested = {}
        for project in ("web", "app"):
            sensor = defs.resolve_sensor_def(f"{project}_late_events_sensor")
            with build_sensor_context(
                instance=instance, definitions=defs, resources=defs.resources
            ) as context:
                requested[project] = sensor.evaluate_tick(context).run_requests
    (request,) = requested["web"]
    assert request.partition_key == day and request.tags[PROJECT_TAG] == "web"
    assert request.job_name in (None, "web_daily_ingestion_job")
    assert requested["app"] == []


def test_a_single_project_moves_to_the_file_keeping_its_batches_and_files(
    two_projects: LocalSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What docs/projects.md says: same project id, folders moved under the project's name."""
    day = _days(1)[0]
    web = two_projects.projects["web"]
    username, secret = project_credentials(load_projects(two_projects.projects_file)[0])
    single = {
        "MIXPANEL_PROJECT_ID": WEB,
        "MIXPANEL_SERVICE_ACCOUNT_USERNAME": username,
        "MIXPANEL_SERVICE_ACCOUNT_SECRET": secret,
        "MIXPANEL_EXPORT_URL": web.export_url,
        "MIXPANEL_START_DATE": "2026-11-01",
    }
    with instance_for_test() as instance:
        with monkeypatch.context() as before:
            before.delenv(PROJECTS_VARIABLE)
            for name, value in single.items():
                before.setenv(name, value)
            flat = build_definitions()
            result = materialize(
                [*flat.assets, *flat.asset_checks],
                partition_key=day,
                instance=instance,
                resources=flat.resources,
            )
            assert result.success
            (event,) = result.asset_materializations_for_node("aep_ingested_batches")
            first = event.metadata["batch_ids"].value
        data = two_projects.data_dir
        (data / "web").mkdir()
        for asset in CHAIN:
            shutil.move(data / asset, data / "web" / asset)
        defs = build_definitions()
        only_load = materialize(
            [*defs.assets, *defs.asset_checks],
            partition_key=day,
            instance=instance,
            resources=defs.resources,
            selection=[AssetKey(["web", "aep_ingested_batches"])],
        )
    assert only_load.success  # it read the moved XDM files
    (event,) = only_load.asset_materializations_for_node("web__aep_ingested_batches")
    assert event.metadata["replaced_batch_ids"].value == first
    assert _live_batches(two_projects) == set(event.metadata["batch_ids"].value)
    records = two_projects.platform.dataset_records(two_projects.dataset_id)
    assert records["_id"].is_unique and len(records) == event.metadata["dagster/row_count"].value


def test_a_project_without_a_dataset_fails_the_load_when_no_default_is_set(
    two_projects: LocalSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AEP_DATASET_ID")
    with pytest.raises(ConfigError, match=r"'web', 'app' give no dataset_id.*AEP_DATASET_ID"):
        build_definitions()


def test_a_single_projects_resource_is_refused_with_the_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PROJECTS_VARIABLE, str(EXAMPLE_PROJECTS_FILE))
    monkeypatch.setenv("AEP_DATASET_ID", "ds")
    assert (
        build_definitions(mixpanel_settings={"days_per_request": 3})
        .resources["app_mixpanel"]
        .days_per_request
        == 3
    )
    with pytest.raises(ValueError, match="give mixpanel_settings"):
        build_definitions(mixpanel=MixpanelResource.from_env(days_per_request=3))


def test_a_bad_projects_file_fails_the_code_location_load_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "projects.yaml"
    bad.write_text(
        EXAMPLE_PROJECTS_FILE.read_text().replace("    region: US\n", "    regoin: US\n", 1)
    )
    completed = subprocess.run(
        [DAGSTER, "definitions", "validate", "-m", "mixpanel_assets.definitions"],
        env={
            "MIXPANEL_ASSETS_PROJECTS": str(bad),
            "AEP_DATASET_ID": "ds",
            "DAGSTER_HOME": str(tmp_path),
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode != 0
    output = completed.stdout + completed.stderr
    assert f"MIXPANEL_ASSETS_PROJECTS='{bad}'" in output
    assert "project 'web', key 'regoin': unknown key" in output


def test_a_missing_credential_is_named_by_its_projects_variable(
    two_projects: LocalSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = _days(1)[0]
    with instance_for_test() as instance:
        monkeypatch.setenv("MIXPANEL_APP_SECRET", "")
        job = build_definitions().resolve_job_def("app_daily_ingestion_job")
        result = job.execute_in_process(partition_key=day, instance=instance, raise_on_error=False)
        assert not result.success
        (failure,) = [event for event in result.all_events if event.is_step_failure]
        assert "MIXPANEL_APP_SECRET is empty" in str(failure.step_failure_data.error)

        monkeypatch.delenv("MIXPANEL_APP_SECRET")
        job = build_definitions().resolve_job_def("app_daily_ingestion_job")
        unset = '"MIXPANEL_APP_SECRET" which is not set'
        with pytest.raises(DagsterInvalidConfigError, match=unset):
            job.execute_in_process(partition_key=day, instance=instance)
    assert two_projects.projects["app"].request_log == []
