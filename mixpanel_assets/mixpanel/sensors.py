"""``late_events_sensor``: re-run recent days that Mixpanel received more events for.

Mobile SDKs deliver events up to five days late and ``/import`` backdates them at will, so a day
exported last night may have grown since. Each day's load into the destination records the
watermark it carried, the largest ``mp_processing_time_ms`` of the export it came from; a
one-line probe asks Mixpanel whether that day now has any event processed after it. So a day
counts as done only once its late events have reached the destination, not once a re-run was
asked for. The cursor remembers which watermark a re-run was requested for: the day is asked
about again when a re-run moved its watermark, or when that re-run failed.
"""

import json
from dataclasses import replace
from datetime import UTC, date, datetime

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    TimeWindowPartitionsDefinition,
    sensor,
)

from mixpanel_assets.mixpanel.assets import WATERMARK
from mixpanel_assets.mixpanel.export_client import MixpanelExportError
from mixpanel_assets.mixpanel.resource import MixpanelResource
from mixpanel_assets.projects import FLAT, ProjectKeys

TRIGGER_TAG = "mixpanel_assets/trigger"
PARTITION_TAG = "dagster/partition"


def late_events_where(watermark_ms: int) -> str:
    """Mixpanel segmentation expression selecting events processed after the watermark."""
    return f'number(properties["mp_processing_time_ms"]) > {watermark_ms}'


def build_late_events_sensor(
    partitions_def: TimeWindowPartitionsDefinition,
    job_name: str,
    loaded_asset: str,
    recent_days: int,
    interval_seconds: int,
    project: ProjectKeys = FLAT,
) -> SensorDefinition:
    """The sensor of ``project``; ``loaded_asset`` is the last asset of the chain,
    whose materializations record the watermark a day reached the destination with."""
    loaded_key = project.asset(loaded_asset)
    run_tags = {TRIGGER_TAG: "late_events", **project.tags}

    @sensor(
        name=project.named("late_events_sensor"),
        job_name=job_name,
        minimum_interval_seconds=interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Re-runs any of the last {recent_days} days that received late events.",
        required_resource_keys={project.named("mixpanel")},
    )
    def late_events_sensor(context: SensorEvaluationContext) -> SensorResult:
        mixpanel: MixpanelResource = project.resource(context, "mixpanel")
        requested: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
        keys = partitions_def.get_partition_keys(current_time=datetime.now(UTC))[-recent_days:]
        client = mixpanel.get_client()
        run_requests, probe_failures = [], []
        for key in keys:
            watermark = _loaded_watermark(context, loaded_key, key)
            if watermark is None:
                continue
            retry_of = None
            if requested.get(key) == watermark:
                retry_of = _failed_late_run(context, key, run_tags)
                if retry_of is None:
                    continue  # the re-run is pending, running, or landed without moving the mark
            day = date.fromisoformat(key)
            query = replace(mixpanel.query(day, day, late_events_where(watermark)), limit=1)
            try:
                late = client.count_events(query)
            except MixpanelExportError as problem:
                context.log.warning(f"late-event probe for {key} failed: {problem}")
                probe_failures.append(key)
                continue
            if late:
                requested[key] = watermark
                run_key = f"late-events:{key}:{watermark}"
                run_requests.append(
                    RunRequest(
                        partition_key=key,
                        run_key=f"{run_key}:retry-of-{retry_of}" if retry_of else run_key,
                        tags=run_tags,
                    )
                )
        cursor = json.dumps({key: requested[key] for key in keys if key in requested})
        if not run_requests:
            reason = f"no late events in {keys[0]}..{keys[-1]}" if keys else "no closed days yet"
            if probe_failures:
                reason += f"; probes failed for {probe_failures}"
            return SensorResult(skip_reason=reason, cursor=cursor)
        return SensorResult(run_requests=run_requests, cursor=cursor)

    return late_events_sensor


def _loaded_watermark(context: SensorEvaluationContext, asset: AssetKey, key: str) -> int | None:
    """The watermark ``key`` reached the destination with (None when it never did)."""
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=asset, asset_partitions=[key]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        return None
    value = records[0].asset_materialization.metadata.get(WATERMARK)
    return int(value.value) if value is not None else None


def _failed_late_run(
    context: SensorEvaluationContext, key: str, run_tags: dict[str, str]
) -> str | None:
    """The id of the day's last late-events run (of this project) if it failed (so it deserves
    another go)."""
    runs = context.instance.get_runs(RunsFilter(tags={PARTITION_TAG: key, **run_tags}), limit=1)
    failed = runs and runs[0].status in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
    return runs[0].run_id[:8] if failed else None
