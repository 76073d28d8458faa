"""The daily chain assembled: the three assets, their checks, the jobs, schedules and sensor."""

from __future__ import annotations

from typing import Any

from dagster import (
    AssetSelection,
    DailyPartitionsDefinition,
    DefaultScheduleStatus,
    Definitions,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
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
from mixpanel_assets.mixpanel.resource import MixpanelResource
from mixpanel_assets.mixpanel.sensors import build_late_events_sensor
from mixpanel_assets.storage import DATA_DIR_VARIABLE, SCRATCH_DIR_VARIABLE, PartitionFiles
from mixpanel_assets.xdm.assets import XDM_EVENTS, build_xdm_checks, build_xdm_experience_events
from mixpanel_assets.xdm.resource import XdmMappingResource

DAILY_JOB = "daily_ingestion_job"
INTRADAY_JOB = "intraday_ingestion_job"


def build_definitions(mixpanel: MixpanelResource | None = None) -> Definitions:
    """Everything, built from the environment as it is now.

    ``mixpanel`` replaces the Mixpanel resource, e.g. to set its filters, retries or rate
    budget in code (``MixpanelResource.from_env(days_per_request=14)``).
    """
    # The open day is a partition too (end_offset=1): its runs are intraday loads.
    partitions = DailyPartitionsDefinition(
        start_date=settings.start_date().isoformat(),
        timezone=settings.partitions_timezone(),
        end_offset=1,
    )
    closed_days = DailyPartitionsDefinition(
        start_date=partitions.start.strftime("%Y-%m-%d"), timezone=partitions.timezone
    )
    intraday = intraday_minutes()
    return Definitions(
        assets=[
            build_mixpanel_raw_events(partitions),
            build_xdm_experience_events(partitions),
            build_aep_ingested_batches(partitions),
        ],
        asset_checks=build_xdm_checks(partitions),
        schedules=[
            build_daily_ingestion_schedule(
                partitions,
                closed_days,
                settings.int_setting(
                    "MIXPANEL_ASSETS_SETTLE_MINUTES",
                    60,
                    0,
                    23 * 60 + 59,
                    "the minutes to wait after midnight before exporting the day",
                ),
            ),
            *(
                [build_intraday_schedule(partitions, _chain_job(INTRADAY_JOB), intraday)]
                if intraday
                else []
            ),
        ],
        sensors=[
            build_late_events_sensor(
                closed_days,
                DAILY_JOB,
                loaded_asset=AEP_BATCHES,
                recent_days=settings.int_setting(
                    "MIXPANEL_ASSETS_LATE_DAYS", 5, 1, 60, "the recent days to watch"
                ),
                interval_seconds=60
                * settings.int_setting(
                    "MIXPANEL_ASSETS_LATE_CHECK_MINUTES",
                    60,
                    1,
                    24 * 60,
                    "the minutes between two checks for late events",
                ),
                max_reruns=settings.int_setting(
                    "MIXPANEL_ASSETS_LATE_MAX_RERUNS",
                    3,
                    1,
                    20,
                    "the re-runs the late-events sensor requests for a day before reporting it",
                ),
            )
        ],
        # A day's steps run one after another; a process per step would only add start-up time.
        executor=in_process_executor,
        resources={
            "mixpanel": mixpanel or MixpanelResource.from_env(),
            "xdm_mapping": XdmMappingResource.from_env(),
            "aep": AEPResource.from_env(),
            "partition_files": PartitionFiles(
                data_dir=settings.env_or_default(DATA_DIR_VARIABLE, "./data"),
                scratch_dir=settings.env_or_default(SCRATCH_DIR_VARIABLE, ""),
                coordination_url=settings.env_or_default(COORDINATION_VARIABLE, ""),
            ),
        },
    )


def build_daily_ingestion_schedule(
    partitions: DailyPartitionsDefinition,
    closed_days: DailyPartitionsDefinition,
    settle_minutes: int,
) -> ScheduleDefinition:
    """The schedule and, through it, the job that runs the three assets for one day.

    It fires ``settle_minutes`` after midnight in the partitions' timezone, so that events Mixpanel
    is still processing at midnight land in the day's first export; it runs the day that just
    closed (the last of ``closed_days``), never the open day.
    """

    job = _chain_job(DAILY_JOB)

    @schedule(
        name="daily_ingestion_schedule",
        cron_schedule=f"{settle_minutes % 60} {settle_minutes // 60} * * *",
        job=job,
        execution_timezone=closed_days.timezone,
        default_status=DefaultScheduleStatus.RUNNING,
        description="Each day after it closes in the partitions' timezone, runs the chain for it.",
    )
    def daily_ingestion_schedule(context: ScheduleEvaluationContext) -> Any:
        keys = closed_days.get_partition_keys(current_time=context.scheduled_execution_time)
        if not keys:
            return SkipReason("no day has closed since the start date yet")
        return RunRequest(partition_key=keys[-1], run_key=keys[-1])

    return daily_ingestion_schedule


def _chain_job(name: str) -> UnresolvedAssetJobDefinition:
    return define_asset_job(
        name=name,
        selection=AssetSelection.assets(RAW_EVENTS, XDM_EVENTS, AEP_BATCHES),
        description="Export one Mixpanel day, map it to XDM and load it into AEP.",
    )
