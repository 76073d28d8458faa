"""``late_events_sensor``: re-run recent days that Mixpanel received more events for.

Design notes: docs/design-notes.md, `mixpanel/sensors.py`.
"""

import time
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime

from dagster import (
    AssetCheckEvaluation,
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
from mixpanel_assets.mixpanel.export_client import MixpanelExportError, MixpanelRateLimitedError
from mixpanel_assets.mixpanel.late_reruns import CHECK_NAME, LateRerun, dump_cursor, load_cursor
from mixpanel_assets.mixpanel.resource import MixpanelResource
from mixpanel_assets.projects import FLAT, ProjectKeys

TRIGGER_TAG = "mixpanel_assets/trigger"
PARTITION_TAG = "dagster/partition"
# Dagster gives up on a sensor tick after 60 s: probing stops in time for the tick to end well
# inside that, whatever Mixpanel does; a probe's own timeouts keep it under PROBE_SECONDS.
TICK_SECONDS = 40.0
PROBE_SECONDS = 20.0


def late_events_where(watermark_ms: int) -> str:
    """Mixpanel segmentation expression selecting events processed after the watermark."""
    return f'number(properties["mp_processing_time_ms"]) > {watermark_ms}'


def build_late_events_sensor(
    partitions_def: TimeWindowPartitionsDefinition,
    job_name: str,
    loaded_asset: str,
    recent_days: int,
    interval_seconds: int,
    max_reruns: int = 3,
    project: ProjectKeys = FLAT,
) -> SensorDefinition:
    """The late-events sensor of ``project``: it re-runs recent days that received late events.

    ``loaded_asset`` is the last asset of the chain, whose materializations record the watermark
    a day reached the destination with. A day whose re-runs keep failing is asked again after a
    doubling pause, ``max_reruns`` times at most, then reported on the check
    ``late_events_reloaded`` of ``loaded_asset``.
    """
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
        started, now = time.monotonic(), time.time()
        entries = load_cursor(context.cursor)
        keys = partitions_def.get_partition_keys(current_time=datetime.now(UTC))[-recent_days:]
        client = mixpanel.get_client()
        run_requests, check_events = [], []
        days = _Days()
        for key in keys:
            watermark = _loaded_watermark(context, loaded_key, key)
            if watermark is None:
                days.not_loaded.append(key)
                continue
            entry = entries.get(key)
            if entry is not None and entry.watermark != watermark:
                if entry.reported:  # loaded since (by hand, say): the day is whole again
                    check_events.append(_check(loaded_key, key, True, entry, max_reruns))
                del entries[key]  # the mark moved: a fresh start
                entry = None
            retry_of = None
            if entry is not None:
                retry_of = _failed_late_run(context, key, run_tags)
                if retry_of is None:  # the re-run is pending, running, or landed without
                    days.rerun_pending.append(key)  # moving the mark
                    continue
                if entry.requests >= max_reruns:
                    if not entry.reported:
                        check_events.append(_check(loaded_key, key, False, entry, max_reruns))
                        entry.reported = True
                        context.log.warning(
                            f"{key}: {entry.requests} late-events re-runs failed; no more are "
                            f"requested (see the check {CHECK_NAME})"
                        )
                    days.given_up.append(key)
                    continue
                if now < entry.not_before:
                    days.waiting.append(key)
                    continue
            if time.monotonic() - started > TICK_SECONDS - PROBE_SECONDS:
                days.unprobed = keys[keys.index(key) :]
                break
            day = date.fromisoformat(key)
            query = replace(mixpanel.query(day, day, late_events_where(watermark)), limit=1)
            try:
                late = client.probe_count(query)
            except MixpanelRateLimitedError as limited:
                wait = f" (retry after {limited.retry_after:.0f} s)" if limited.retry_after else ""
                return SensorResult(
                    skip_reason=f"rate-limited: {limited}{wait}; nothing requested this tick, "
                    "the next tick probes again",
                    cursor=context.cursor,
                )
            except MixpanelExportError as problem:
                context.log.warning(f"late-event probe for {key} failed: {problem}")
                days.probe_failed.append(key)
                continue
            days.probed.append(key)
            if late:
                entry = LateRerun(watermark, requests=entry.requests + 1 if entry else 1)
                entry.not_before = now + entry.backoff_seconds(interval_seconds)
                entries[key] = entry
                run_key = f"late-events:{key}:{watermark}"
                run_requests.append(
                    RunRequest(
                        partition_key=key,
                        run_key=f"{run_key}:retry-of-{retry_of}" if retry_of else run_key,
                        tags=run_tags,
                    )
                )
        cursor = dump_cursor(entries, keys)
        if run_requests:
            return SensorResult(run_requests=run_requests, cursor=cursor, asset_events=check_events)
        reason = days.skip_reason(keys, loaded_key.to_user_string(), max_reruns)
        return SensorResult(skip_reason=reason, cursor=cursor, asset_events=check_events)

    return late_events_sensor


@dataclass
class _Days:
    """What a tick did with each recent day, for a skip reason that says why nothing ran."""

    not_loaded: list[str] = field(default_factory=list)
    rerun_pending: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)
    probe_failed: list[str] = field(default_factory=list)
    probed: list[str] = field(default_factory=list)
    unprobed: list[str] = field(default_factory=list)

    def skip_reason(self, keys: list[str], loaded_asset: str, max_reruns: int) -> str:
        """Why the tick requested no run: what it found of each recent day."""
        if not keys:
            return "no day of the partitions has begun yet: nothing to probe"
        span = f"{keys[0]}..{keys[-1]}"
        if self.probed:
            parts = [f"probed {_listed(self.probed)}: no late events, nothing to re-run"]
        else:
            parts = [f"probed no day of {span}"]
        if len(self.not_loaded) == len(keys):
            parts.append(
                f"none of them has been loaded into {loaded_asset} yet, and only loaded days "
                "are probed"
            )
        elif self.not_loaded:
            parts.append(f"{_listed(self.not_loaded)} not loaded into {loaded_asset} yet")
        if self.rerun_pending:
            parts.append(
                f"late-events re-runs of {_listed(self.rerun_pending)} are queued, running or "
                "landed without a new watermark"
            )
        if self.probe_failed:
            parts.append(f"probes failed for {_listed(self.probe_failed)} (see the tick's log)")
        if self.waiting:
            parts.append(f"failed re-runs of {_listed(self.waiting)} are asked again after a pause")
        if self.given_up:
            parts.append(
                f"gave up on {_listed(self.given_up)} after {max_reruns} failed re-runs: see the "
                f"check {CHECK_NAME} and re-run them by hand"
            )
        if self.unprobed:
            parts.append(
                f"out of time before probing {_listed(self.unprobed)}: the next tick goes on"
            )
        return "; ".join(parts)


def _listed(keys: list[str]) -> str:
    return ", ".join(keys)


def _check(
    asset: AssetKey, key: str, passed: bool, entry: LateRerun, max_reruns: int
) -> AssetCheckEvaluation:
    """The day's ``late_events_reloaded`` verdict: failed when the sensor gave up on it."""
    return AssetCheckEvaluation(
        asset_key=asset,
        check_name=CHECK_NAME,
        partition=key,
        passed=passed,
        metadata={"day": key, "watermark_ms": entry.watermark, "re_runs_requested": entry.requests},
        description=None
        if passed
        else f"{key} received late events after watermark {entry.watermark}, and the "
        f"{entry.requests} re-runs the late-events sensor requested for it failed; it asks no "
        f"more (at most {max_reruns}, MIXPANEL_ASSETS_LATE_MAX_RERUNS). See those runs' logs, "
        f"fix the cause, then re-run {key} by hand.",
    )


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
