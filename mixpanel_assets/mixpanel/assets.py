"""``mixpanel_raw_events``: one closed project day of the Raw Event Export, byte-faithful."""

from datetime import UTC, date, datetime
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    RetryRequested,
    TableColumn,
    TableRecord,
    TableSchema,
    TimeWindowPartitionsDefinition,
    asset,
)

from mixpanel_assets.intraday import clock
from mixpanel_assets.intraday.open_day import day_state, day_state_metadata, open_day_load
from mixpanel_assets.mixpanel.backfill_batching import (
    BACKFILL_TAG,
    BackfillStaging,
    backfill_block,
    backfill_days,
    staging_store,
    sweep_leftovers,
)
from mixpanel_assets.mixpanel.event_time import epoch_seconds
from mixpanel_assets.mixpanel.export_client import (
    ExportSummary,
    MixpanelExportClient,
    MixpanelExportError,
    UnsplittableExportError,
)
from mixpanel_assets.mixpanel.resource import MixpanelResource
from mixpanel_assets.preflight import check_run_settings
from mixpanel_assets.projects import FLAT, ProjectKeys
from mixpanel_assets.readable import iso_utc, size_text, utc_instant
from mixpanel_assets.settings import ConfigError
from mixpanel_assets.storage import PartitionFiles

RAW_EVENTS = "mixpanel_raw_events"
GROUP = "mixpanel_to_aep"
MIXPANEL_POOL = "mixpanel_export"
TOP_EVENTS_SHOWN = 10
# Metadata key of the largest mp_processing_time_ms in the day: the late-events sensor's mark.
WATERMARK = "watermark_processing_time_ms"
OWN_REQUEST = "own request"


def build_mixpanel_raw_events(
    partitions_def: TimeWindowPartitionsDefinition, project: ProjectKeys = FLAT
) -> AssetsDefinition:
    """The asset of ``project`` (its key prefix, asset group and resource keys; flat by default)."""

    @asset(
        name=RAW_EVENTS,
        key_prefix=project.prefix,
        partitions_def=partitions_def,
        pool=MIXPANEL_POOL,
        kinds={"mixpanel"},
        group_name=project.named(GROUP),
        required_resource_keys={project.named("mixpanel"), project.named("partition_files")},
    )
    def mixpanel_raw_events(context: AssetExecutionContext) -> MaterializeResult:
        """The day's Raw Event Export as received (gzip JSON lines) and a manifest.

        A closed day is exported whole and published only when complete; a re-run replaces it
        whole. A run of the open day (today in the partitions' timezone) exports only what
        Mixpanel processed since the day's previous load (see ``intraday.open_day``). A
        Mixpanel outage that outlasts the client's own retries makes the step try again later
        (``step_retries``); a refusal (credentials, plan, access, timezone, URL) fails at once.
        """
        mixpanel: MixpanelResource = project.resource(context, "mixpanel")
        partition_files: PartitionFiles = project.resource(context, "partition_files")
        check_run_settings(context, mixpanel, partition_files, project)
        window = context.partition_time_window
        now = clock.now()
        if window.start > now:
            raise Failure(
                f"{context.partition_key} has not begun yet in {partitions_def.timezone}: "
                "there is nothing to export.",
                allow_retries=False,
            )
        # The open day: this run loads what Mixpanel processed since the day's previous load.
        load = None
        if window.end > now:
            load = open_day_load(partition_files, context.partition_key, now)
        day = date.fromisoformat(context.partition_key)
        try:
            client = mixpanel.get_client()
        except ConfigError as problem:
            raise Failure(str(problem), allow_retries=False) from None
        folder = partition_files.folder(RAW_EVENTS, context.partition_key)
        with folder.staging() as staging:
            target = staging / "events.jsonl.gz"
            try:
                if load is None:
                    summary, request, source = _export_day(
                        context, day, mixpanel, client, partition_files, target
                    )
                else:
                    query = mixpanel.query(day, day, load.where)
                    summary = client.export_to_file(query, target)
                    request, source = query.params(client.project_id), OWN_REQUEST
            except MixpanelExportError as problem:
                if problem.transient and context.retry_number < mixpanel.step_retries:
                    context.log.warning(f"{problem} Trying again later.")
                    raise RetryRequested(
                        max_retries=mixpanel.step_retries,
                        seconds_to_wait=mixpanel.step_retry_delay_seconds,
                    ) from problem
                raise Failure(str(problem), allow_retries=False) from None
            request = {**request, "url": client.export_url}
            stored_bytes = target.stat().st_size
            manifest = folder.publish(
                {"events": target}, {**_manifest(summary, request), **day_state(load, request)}
            )
        size = size_text(summary.byte_count)
        if source == OWN_REQUEST:
            context.log.info(
                f"exported {summary.line_count} events ({size}) for {day} "
                f"in {summary.attempts} attempt(s)"
            )
        else:
            context.log.info(
                f"took {day} from the shared export of {source}: {summary.line_count} events "
                f"({size}); that request took {summary.attempts} attempt(s)"
            )
        metadata = {
            **_metadata(summary, manifest, folder.location("events", manifest), stored_bytes),
            "export_source": source,
        }
        return MaterializeResult(metadata={**metadata, **day_state_metadata(load)})

    return mixpanel_raw_events


def _export_day(
    context: AssetExecutionContext,
    day: date,
    mixpanel: MixpanelResource,
    client: MixpanelExportClient,
    partition_files: PartitionFiles,
    target: Path,
) -> tuple[ExportSummary, dict[str, str], str]:
    """The day's export in ``target``, the request made and where the day came from: its own
    request, or its backfill block's shared one (``backfill block <first>..<last>``)."""
    partitions_zone = context.assets_def.partitions_def.timezone
    if mixpanel.export_timezone() != partitions_zone:
        raise Failure(
            f"Mixpanel's export days for this project are {mixpanel.export_timezone()} days "
            f"(MIXPANEL_EVENT_TIME={mixpanel.event_time}), but the partitions are days in "
            f"{partitions_zone}: the code location was loaded with other MIXPANEL_EVENT_TIME "
            "or MIXPANEL_PROJECT_TIMEZONE values than the run has. Give both the same values "
            "and reload the code location (see docs/upgrading.md).",
            allow_retries=False,
        )
    backfill_id = context.run.tags.get(BACKFILL_TAG)
    raw_events = partition_files.asset_store(RAW_EVENTS)
    for swept in sweep_leftovers(
        context.instance,
        raw_events,
        partition_files.folder(RAW_EVENTS, context.partition_key).store,
        partition_files.coordinator(),
    ):
        context.log.info(f"removed {swept}, left by an ended backfill or a killed run")
    if not backfill_id or mixpanel.days_per_request <= 1:
        return _export_alone(client, mixpanel, day, target)
    block = backfill_block(context.instance, backfill_id, day, mixpanel.days_per_request)
    shared = BackfillStaging(staging_store(raw_events, backfill_id), partition_files.coordinator())
    with shared.locked() as staging:
        if not staging.has(day):
            if staging.taken(day):  # a re-run of a day this backfill already took
                return _export_alone(client, mixpanel, day, target)
            days = staging.to_export(day, block)
            query = mixpanel.query(days[0], days[-1])
            context.log.info(
                f"exporting {days[0]}..{days[-1]} in one request for backfill {backfill_id}"
            )
            try:
                staging.stage(client, query, mixpanel.export_day_of)
            except UnsplittableExportError as problem:
                context.log.warning(f"{problem}; exporting {day} on its own")
                return _export_alone(client, mixpanel, day, target)
        summary, request = staging.take(day, target)
        if staging.remove_if_all_taken(backfill_days(context.instance, backfill_id)):
            context.log.info("the backfill's last day is taken: its staging folder is removed")
        return summary, request, f"backfill block {request['from_date']}..{request['to_date']}"


def _export_alone(
    client: MixpanelExportClient, mixpanel: MixpanelResource, day: date, target: Path
) -> tuple[ExportSummary, dict[str, str], str]:
    query = mixpanel.query(day, day)
    return client.export_to_file(query, target), query.params(client.project_id), OWN_REQUEST


def _manifest(summary: ExportSummary, request: dict[str, str]) -> dict[str, object]:
    return {
        "line_count": summary.line_count,
        "byte_count": summary.byte_count,
        "sha256": summary.sha256,
        "min_time": summary.min_time,
        "max_time": summary.max_time,
        "max_processing_time_ms": summary.max_processing_time_ms,
        "unparseable_lines": summary.unparseable_lines,
        "attempts": summary.attempts,
        "request": request,
        "exported_at": iso_utc(datetime.now(UTC).timestamp()),
    }


def _metadata(
    summary: ExportSummary, manifest: dict[str, object], location: str, stored_bytes: int
) -> dict:
    top_events = summary.event_counts.most_common(TOP_EVENTS_SHOWN)
    watermark = summary.max_processing_time_ms
    return {
        "dagster/row_count": summary.line_count,
        "dagster/uri": MetadataValue.path(location),
        "size": f"{size_text(summary.byte_count)} of JSON lines, {size_text(stored_bytes)} "
        "stored (gzip)",
        "uncompressed_bytes": summary.byte_count,
        "stored_bytes": stored_bytes,
        "sha256": summary.sha256,
        "min_event_time": _time_text(summary.min_time),
        "max_event_time": _time_text(summary.max_time),
        WATERMARK: watermark or 0,
        "watermark_processing_time": utc_instant(watermark),
        "exported_at": str(manifest["exported_at"]),
        "unparseable_lines": summary.unparseable_lines,
        "export_attempts": summary.attempts,
        "request": MetadataValue.json(manifest["request"]),
        "top_events": MetadataValue.table(
            records=[TableRecord({"event": name, "count": count}) for name, count in top_events],
            schema=TableSchema(
                columns=[TableColumn("event", "string"), TableColumn("count", "int")]
            ),
        ),
    }


def _time_text(raw_time: float | None) -> str:
    """Event times as exported (before any legacy-timezone correction), shown as UTC."""
    if raw_time is None:
        return "none"
    return iso_utc(epoch_seconds(raw_time))
