"""The daily chain assembled per project: assets, checks, jobs, schedules and sensors.

The AEP side, coordination and the run queue are shared by every project.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetSelection,
    DailyPartitionsDefinition,
    DefaultScheduleStatus,
    Definitions,
    ResourceDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SensorDefinition,
    SkipReason,
    define_asset_job,
    in_process_executor,
    schedule,
)
from dagster._core.definitions.unresolved_asset_job_definition import (  # the type only
    UnresolvedAssetJobDefinition,
)

from mixpanel_assets import settings
from mixpanel_assets.aep.assets import AEP_BATCHES, build_aep_ingested_batches
from mixpanel_assets.aep.resource import AEPResource
from mixpanel_assets.coordination import COORDINATION_VARIABLE
from mixpanel_assets.intraday.schedule import build_intraday_schedule, intraday_minutes
from mixpanel_assets.mixpanel.assets import RAW_EVENTS, build_mixpanel_raw_events
from mixpanel_assets.mixpanel.event_time import export_timezone
from mixpanel_assets.mixpanel.resource import MixpanelResource
from mixpanel_assets.mixpanel.sensors import build_late_events_sensor
from mixpanel_assets.ownership import owners, with_ownership
from mixpanel_assets.projects import (
    FLAT,
    PROJECTS_VARIABLE,
    ProjectKeys,
    ProjectSpec,
    configured_projects,
)
from mixpanel_assets.settings import ConfigError
from mixpanel_assets.storage import DATA_DIR_VARIABLE, SCRATCH_DIR_VARIABLE, PartitionFiles
from mixpanel_assets.xdm.assets import XDM_EVENTS, build_xdm_experience_events
from mixpanel_assets.xdm.checks import build_xdm_checks
from mixpanel_assets.xdm.resource import XdmMappingResource

DAILY_JOB = "daily_ingestion_job"
INTRADAY_JOB = "intraday_ingestion_job"


@dataclass(frozen=True)
class Automation:
    """The schedule and sensor settings every project shares, read when the code loads."""

    settle_minutes: int
    late_days: int
    late_check_minutes: int
    late_max_reruns: int
    intraday_minutes: int  # 0: no intraday schedule

    @classmethod
    def from_env(cls) -> Automation:
        """The automation settings from their environment variables."""
        return cls(
            settle_minutes=settings.int_setting(
                "MIXPANEL_ASSETS_SETTLE_MINUTES",
                60,
                0,
                23 * 60 + 59,
                "the minutes to wait after midnight before exporting the day",
            ),
            late_days=settings.int_setting(
                "MIXPANEL_ASSETS_LATE_DAYS", 5, 1, 60, "the recent days to watch"
            ),
            late_check_minutes=settings.int_setting(
                "MIXPANEL_ASSETS_LATE_CHECK_MINUTES",
                60,
                1,
                24 * 60,
                "the minutes between two checks for late events",
            ),
            late_max_reruns=settings.int_setting(
                "MIXPANEL_ASSETS_LATE_MAX_RERUNS",
                3,
                1,
                20,
                "the re-runs the late-events sensor requests for a day before reporting it",
            ),
            intraday_minutes=intraday_minutes(),
        )


def build_definitions(
    mixpanel: MixpanelResource | None = None, mixpanel_settings: dict[str, Any] | None = None
) -> Definitions:
    """Everything, built from the environment as it is now.

    ``mixpanel`` replaces the single project's Mixpanel resource, e.g. to set its filters,
    retries or rate budget in code (``MixpanelResource.from_env(days_per_request=14)``);
    ``mixpanel_settings`` sets those fields for every project's resource.
    """
    projects = configured_projects(settings.start_date)
    automation = Automation.from_env()
    several = projects[0].name is not None
    if several and mixpanel is not None:
        raise ValueError(
            f"build_definitions(mixpanel=...) replaces the single project's resource; with "
            f"{PROJECTS_VARIABLE} set, give mixpanel_settings={{...}} for every project's."
        )
    if several:
        _require_datasets(projects)
    assets: list[Any] = []
    checks: list[Any] = []
    schedules: list[ScheduleDefinition] = []
    sensors: list[SensorDefinition] = []
    resources: dict[str, Any] = {"aep": AEPResource.from_env(dataset_required=not several)}
    team = owners()
    for spec in projects:
        keys = spec.keys
        partitions = partitions_for(spec)
        assets += with_ownership(
            [
                build_mixpanel_raw_events(partitions, keys),
                build_xdm_experience_events(partitions, keys, spec.mapping),
                build_aep_ingested_batches(partitions, keys, spec.dataset_id),
            ],
            AEP_BATCHES,
            team,
        )
        checks += build_xdm_checks(partitions, keys)
        project_schedules, project_sensors = build_project_automation(partitions, keys, automation)
        schedules += project_schedules
        sensors += project_sensors
        resources.update(project_resources(spec, mixpanel, mixpanel_settings or {}))
    return Definitions(
        assets=assets,
        asset_checks=checks,
        schedules=schedules,
        sensors=sensors,
        # A day's steps run one after another; a process per step would only add start-up time.
        executor=in_process_executor,
        resources=resources,
    )


def partitions_for(spec: ProjectSpec) -> DailyPartitionsDefinition:
    """A project's daily partitions: Mixpanel's export days from its start, the open day too.

    ``end_offset=1``: the open day's runs are intraday loads. The one place that says in which
    timezone a project's days are: UTC for ``utc`` projects, the project's for legacy ones.
    """
    if spec.name is None:
        timezone = settings.partitions_timezone()
    else:
        timezone = export_timezone(spec.event_time or "utc", spec.project_timezone or "UTC")
    return DailyPartitionsDefinition(
        start_date=spec.start_date.isoformat(), timezone=timezone, end_offset=1
    )


def closed_days_of(partitions: DailyPartitionsDefinition) -> DailyPartitionsDefinition:
    """The same days without the open one: what the daily schedule and late events look at."""
    return DailyPartitionsDefinition(
        start_date=partitions.start.strftime("%Y-%m-%d"), timezone=partitions.timezone
    )


def project_resources(
    spec: ProjectSpec, mixpanel: MixpanelResource | None, mixpanel_settings: dict[str, Any]
) -> dict[str, ResourceDefinition | Any]:
    """The project's own resources, under its keys.

    Mixpanel (its rate budget is per project id), the mapping and partition files (under
    ``<data dir>/<project>/``).
    """
    keys = spec.keys
    if mixpanel is None or spec.name is not None:
        mixpanel = MixpanelResource.for_project(spec, **mixpanel_settings)
    return {
        keys.named("mixpanel"): mixpanel,
        keys.named("xdm_mapping"): XdmMappingResource.from_env(mapping_file=spec.mapping),
        keys.named("partition_files"): PartitionFiles(
            data_dir=settings.env_or_default(DATA_DIR_VARIABLE, "./data"),
            scratch_dir=settings.env_or_default(SCRATCH_DIR_VARIABLE, ""),
            coordination_url=settings.env_or_default(COORDINATION_VARIABLE, ""),
            project=spec.name or "",
        ),
    }


def build_project_automation(
    partitions: DailyPartitionsDefinition, keys: ProjectKeys, automation: Automation
) -> tuple[list[ScheduleDefinition], list[SensorDefinition]]:
    """A project's schedules and sensors, named after it."""
    closed_days = closed_days_of(partitions)
    schedules = [build_daily_ingestion_schedule(closed_days, automation.settle_minutes, keys)]
    if automation.intraday_minutes:
        schedules.append(
            build_intraday_schedule(
                partitions,
                _chain_job(keys.named(INTRADAY_JOB), keys),
                automation.intraday_minutes,
                keys,
            )
        )
    sensors = [
        build_late_events_sensor(
            closed_days,
            keys.named(DAILY_JOB),
            loaded_asset=AEP_BATCHES,
            recent_days=automation.late_days,
            interval_seconds=60 * automation.late_check_minutes,
            max_reruns=automation.late_max_reruns,
            project=keys,
        )
    ]
    return schedules, sensors


def build_daily_ingestion_schedule(
    closed_days: DailyPartitionsDefinition, settle_minutes: int, keys: ProjectKeys = FLAT
) -> ScheduleDefinition:
    """The schedule and, through it, the job that runs the three assets for one day.

    It fires ``settle_minutes`` after midnight in the partitions' timezone, so that events
    Mixpanel is still processing at midnight land in the day's first export; it runs the day that
    just closed (the last of ``closed_days``), never the open day.
    """
    job = _chain_job(keys.named(DAILY_JOB), keys)

    @schedule(
        name=keys.named("daily_ingestion_schedule"),
        cron_schedule=f"{settle_minutes % 60} {settle_minutes // 60} * * *",
        job=job,
        execution_timezone=closed_days.timezone,
        default_status=DefaultScheduleStatus.RUNNING,
        description="Each day after it closes in the partitions' timezone, runs the chain for it.",
    )
    def daily_ingestion_schedule(context: ScheduleEvaluationContext) -> Any:
        days = closed_days.get_partition_keys(current_time=context.scheduled_execution_time)
        if not days:
            return SkipReason("no day has closed since the start date yet")
        return RunRequest(partition_key=days[-1], run_key=days[-1])

    return daily_ingestion_schedule


def _chain_job(name: str, keys: ProjectKeys) -> UnresolvedAssetJobDefinition:
    return define_asset_job(
        name=name,
        selection=AssetSelection.assets(
            *(keys.asset(asset) for asset in (RAW_EVENTS, XDM_EVENTS, AEP_BATCHES))
        ),
        description="Export one Mixpanel day, map it to XDM and load it into AEP.",
        tags=keys.tags,
    )


def _require_datasets(projects: Sequence[ProjectSpec]) -> None:
    """Every project has a dataset: its own dataset_id, or AEP_DATASET_ID."""
    without = [spec.name for spec in projects if not spec.dataset_id]
    if without and not os.environ.get("AEP_DATASET_ID", "").strip():
        raise ConfigError(
            f"{PROJECTS_VARIABLE}: project(s) {', '.join(map(repr, without))} give no "
            "dataset_id and AEP_DATASET_ID is not set: give each project a dataset_id or set "
            "AEP_DATASET_ID to the dataset they share."
        )
