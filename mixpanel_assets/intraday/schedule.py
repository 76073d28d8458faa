"""``intraday_ingestion_schedule``: the open day, every MIXPANEL_ASSETS_INTRADAY_MINUTES minutes.

Its exports draw on the project's Mixpanel rate budget like every other query (the daily
schedule, backfills, the late-events sensor); it is the one that gives way: a tick is skipped,
saying so, when fewer than ``RESERVED_QUERIES`` of the hour's queries are left for the others.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    TimeWindowPartitionsDefinition,
    schedule,
)
from dagster._core.definitions.unresolved_asset_job_definition import (  # the type only
    UnresolvedAssetJobDefinition,
)

from mixpanel_assets.coordination import coordinator
from mixpanel_assets.errors import ConfigError
from mixpanel_assets.intraday import clock
from mixpanel_assets.mixpanel.rate_budget import HOUR
from mixpanel_assets.mixpanel.resource import MixpanelResource
from mixpanel_assets.projects import FLAT, ProjectKeys

INTRADAY_MINUTES_VARIABLE = "MIXPANEL_ASSETS_INTRADAY_MINUTES"
DEFAULT_MINUTES = 60
MIN_MINUTES = 15
DAY_MINUTES = 24 * 60
RESERVED_QUERIES = 10
INTRADAY_TAG = "mixpanel_assets/intraday"
SCHEDULE_NAME = "intraday_ingestion_schedule"


def intraday_minutes() -> int:
    """MIXPANEL_ASSETS_INTRADAY_MINUTES, checked when the code location loads (0: off)."""
    value = os.environ.get(INTRADAY_MINUTES_VARIABLE, "").strip()
    if not value:
        return DEFAULT_MINUTES
    try:
        minutes = int(value)
    except ValueError:
        minutes = -1
    if minutes != 0 and not MIN_MINUTES <= minutes <= DAY_MINUTES:
        raise ConfigError(
            f"{INTRADAY_MINUTES_VARIABLE}={value!r} is not valid: give the minutes between two "
            f"loads of the open day as a whole number from {MIN_MINUTES} to {DAY_MINUTES} "
            f"(default {DEFAULT_MINUTES}), or 0 to turn intraday loads off. Each load costs a "
            "Mixpanel query, and a project has 60 an hour."
        )
    return minutes


def intraday_crons(minutes: int) -> list[str]:
    """Cron lines firing every ``minutes`` minutes from midnight.

    The day's last gap may be shorter when ``minutes`` does not divide a day.
    """
    hours_by_minute: dict[int, list[int]] = {}
    for start in range(0, DAY_MINUTES, minutes):
        hours_by_minute.setdefault(start % 60, []).append(start // 60)
    return [
        f"{minute} {'*' if len(hours) == 24 else ','.join(map(str, hours))} * * *"
        for minute, hours in sorted(hours_by_minute.items())
    ]


def queries_left_this_hour(mixpanel: MixpanelResource, now: float) -> int:
    """The project's export queries not yet booked in the rate budget's last hour."""
    # The budget's name as MixpanelResource.get_client gives it.
    name = f"mixpanel-export-budget-{mixpanel.project_id.strip()}"
    with coordinator(mixpanel.coordination_url).update_state(name) as state:
        booked = [slot for slot in state.value or [] if slot > now - HOUR]
    return mixpanel.queries_per_hour - len(booked)


def build_intraday_schedule(
    partitions_def: TimeWindowPartitionsDefinition,
    job: UnresolvedAssetJobDefinition,
    minutes: int,
    project: ProjectKeys = FLAT,
) -> ScheduleDefinition:
    """The schedule running a project's intraday loads every ``minutes`` minutes."""

    @schedule(
        name=project.named(SCHEDULE_NAME),
        required_resource_keys={project.named("mixpanel")},
        cron_schedule=intraday_crons(minutes),
        job=job,
        execution_timezone=partitions_def.timezone,
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"Every {minutes} minutes, loads what Mixpanel processed for the open day "
        "since its previous load; skipped when the Mixpanel rate budget is short.",
    )
    def intraday_ingestion_schedule(context: ScheduleEvaluationContext) -> Any:
        mixpanel: MixpanelResource = project.resource(context, "mixpanel")
        when: datetime = context.scheduled_execution_time or clock.now()
        keys = partitions_def.get_partition_keys(current_time=when)
        if not keys:
            return SkipReason(f"the first day ({partitions_def.start}) has not begun yet")
        key = keys[-1]
        left = queries_left_this_hour(mixpanel, when.timestamp())
        if left < RESERVED_QUERIES:
            return SkipReason(
                f"skipped the intraday load of {key}: only {left} Mixpanel export queries are "
                f"left this hour, and {RESERVED_QUERIES} stay for the daily schedule, backfills "
                "and the late-events sensor. The next tick tries again."
            )
        return RunRequest(
            partition_key=key, run_key=f"intraday:{key}:{when:%H%M}", tags={INTRADAY_TAG: "true"}
        )

    return intraday_ingestion_schedule
