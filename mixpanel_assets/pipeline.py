"""The daily chain assembled: the three assets, their checks, the job, schedule and sensor."""

from __future__ import annotations

from dagster import (
    AssetSelection,
    DailyPartitionsDefinition,
    DefaultScheduleStatus,
    Definitions,
    ScheduleDefinition,
    build_schedule_from_partitioned_job,
    define_asset_job,
    in_process_executor,
)

from mixpanel_assets import settings
from mixpanel_assets.aep.assets import AEP_BATCHES, build_aep_ingested_batches
from mixpanel_assets.aep.resource import AEPResource
from mixpanel_assets.coordination import COORDINATION_VARIABLE
from mixpanel_assets.mixpanel.assets import RAW_EVENTS, build_mixpanel_raw_events
from mixpanel_assets.mixpanel.resource import MixpanelResource
from mixpanel_assets.mixpanel.sensors import build_late_events_sensor
from mixpanel_assets.storage import DATA_DIR_VARIABLE, SCRATCH_DIR_VARIABLE, PartitionFiles
from mixpanel_assets.xdm.assets import XDM_EVENTS, build_xdm_checks, build_xdm_experience_events
from mixpanel_assets.xdm.resource import XdmMappingResource

DAILY_JOB = "daily_ingestion_job"


def build_definitions(mixpanel: MixpanelResource | None = None) -> Definitions:
    """Everything, built from the environment as it is now.

    ``mixpanel`` replaces the Mixpanel resource, e.g. to set its filters, retries or rate
    budget in code (``MixpanelResource.from_env(days_per_request=14)``).
    """
    partitions = DailyPartitionsDefinition(
        start_date=settings.start_date().isoformat(), timezone=settings.partitions_timezone()
    )
    return Definitions(
        assets=[
            build_mixpanel_raw_events(partitions),
            build_xdm_experience_events(partitions),
            build_aep_ingested_batches(partitions),
        ],
        asset_checks=build_xdm_checks(partitions),
        schedules=[
            build_daily_ingestion_schedule(
                settings.int_setting(
                    "MIXPANEL_ASSETS_SETTLE_MINUTES",
                    60,
                    0,
                    23 * 60 + 59,
                    "the minutes to wait after midnight before exporting the day",
                )
            )
        ],
        sensors=[
            build_late_events_sensor(
                partitions,
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


def build_daily_ingestion_schedule(settle_minutes: int) -> ScheduleDefinition:
    """The schedule and, through it, the job that runs the three assets for one day.

    It fires ``settle_minutes`` after midnight in the partitions' timezone, so that events Mixpanel
    is still processing at midnight land in the day's first export.
    """
    job = define_asset_job(
        name=DAILY_JOB,
        selection=AssetSelection.assets(RAW_EVENTS, XDM_EVENTS, AEP_BATCHES),
        description="Export one Mixpanel day, map it to XDM and load it into AEP.",
    )
    return build_schedule_from_partitioned_job(
        job,
        name="daily_ingestion_schedule",
        hour_of_day=settle_minutes // 60,
        minute_of_hour=settle_minutes % 60,
        default_status=DefaultScheduleStatus.RUNNING,
        description="Each day after it closes in the partitions' timezone, runs the chain for it.",
    )
