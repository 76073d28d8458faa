"""``late_events_sensor``: re-run recent days that Mixpanel received more events for.

Mobile SDKs deliver events up to five days late and ``/import`` backdates them at will, so a day
exported last night may have grown since. Each raw partition records its watermark, the largest
``mp_processing_time_ms`` it holds; a one-line probe asks Mixpanel whether that day now has any
event processed after it. The cursor remembers which watermark a re-run was requested for, so a
day is re-requested only after a re-run moved its watermark and newer events arrived again.
"""

import json
from dataclasses import replace
from datetime import UTC, date, datetime

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    TimeWindowPartitionsDefinition,
    sensor,
)

from mixpanel_assets.mixpanel.assets import RAW_EVENTS, WATERMARK
from mixpanel_assets.mixpanel.export_client import MixpanelExportError
from mixpanel_assets.mixpanel.resource import MixpanelResource

RECENT_DAYS = 5


def late_events_where(watermark_ms: int) -> str:
    """Mixpanel segmentation expression selecting events processed after the watermark."""
    return f'number(properties["mp_processing_time_ms"]) > {watermark_ms}'


def build_late_events_sensor(
    partitions_def: TimeWindowPartitionsDefinition,
    job_name: str,
    recent_days: int = RECENT_DAYS,
    interval_seconds: int = 3600,
) -> SensorDefinition:
    @sensor(
        name="late_events_sensor",
        job_name=job_name,
        minimum_interval_seconds=interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Re-runs any of the last {recent_days} days that received late events.",
    )
    def late_events_sensor(
        context: SensorEvaluationContext, mixpanel: MixpanelResource
    ) -> SensorResult:
        requested: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
        keys = partitions_def.get_partition_keys(current_time=datetime.now(UTC))[-recent_days:]
        client = mixpanel.get_client()
        run_requests, probe_failures = [], []
        for key in keys:
            watermark = _watermark(context, key)
            if watermark is None or requested.get(key) == watermark:
                continue
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
                run_requests.append(
                    RunRequest(
                        partition_key=key,
                        run_key=f"late-events:{key}:{watermark}",
                        tags={"mixpanel_assets/trigger": "late_events"},
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


def _watermark(context: SensorEvaluationContext, key: str) -> int | None:
    """The latest raw materialization's watermark for ``key`` (None when never exported)."""
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(RAW_EVENTS), asset_partitions=[key]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        return None
    value = records[0].asset_materialization.metadata.get(WATERMARK)
    return int(value.value) if value is not None else None
