"""``xdm_experience_events``: the day mapped to XDM, repeats dropped, bad events quarantined."""

from contextlib import ExitStack
from datetime import UTC, datetime

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    TimeWindowPartitionsDefinition,
    asset,
)

from mixpanel_assets.intraday.open_day import DAY_COMPLETE
from mixpanel_assets.intraday.seeding import earlier_loads_keys
from mixpanel_assets.mixpanel.assets import GROUP, RAW_EVENTS
from mixpanel_assets.mixpanel.resource import MixpanelResource
from mixpanel_assets.projects import FLAT, ProjectKeys
from mixpanel_assets.settings import ConfigError
from mixpanel_assets.storage import PartitionFiles
from mixpanel_assets.xdm.day_mapping import map_day
from mixpanel_assets.xdm.resource import XdmMappingResource
from mixpanel_assets.xdm.schema_fingerprint import proved_fingerprint

XDM_EVENTS = "xdm_experience_events"


def build_xdm_experience_events(
    partitions_def: TimeWindowPartitionsDefinition, project: ProjectKeys = FLAT
) -> AssetsDefinition:
    @asset(
        name=XDM_EVENTS,
        key_prefix=project.prefix,
        partitions_def=partitions_def,
        deps=[project.asset(RAW_EVENTS)],
        kinds={"python", "xdm"},
        group_name=project.named(GROUP),
        required_resource_keys={
            project.named(name) for name in ("mixpanel", "xdm_mapping", "partition_files")
        },
    )
    def xdm_experience_events(context: AssetExecutionContext) -> MaterializeResult:
        """The day's events as XDM ExperienceEvents (gzip JSON lines), deduplicated by
        Mixpanel's key; events that cannot be valid XDM are quarantined with their reasons."""
        mixpanel: MixpanelResource = project.resource(context, "mixpanel")
        xdm_mapping: XdmMappingResource = project.resource(context, "xdm_mapping")
        partition_files: PartitionFiles = project.resource(context, "partition_files")
        try:
            spec = xdm_mapping.spec(mixpanel)
            workers = xdm_mapping.worker_count()
        except ConfigError as problem:
            raise Failure(str(problem), allow_retries=False) from None
        raw = partition_files.folder(RAW_EVENTS, context.partition_key)
        raw_manifest = raw.manifest()  # once: the file mapped and the figures kept must agree
        folder = partition_files.folder(XDM_EVENTS, context.partition_key)
        max_share = xdm_mapping.rules().max_quarantined_share
        load = raw_manifest.get("intraday_load")
        with ExitStack() as stack:
            raw_file = stack.enter_context(raw.local_copy("events", raw_manifest))
            staging = stack.enter_context(folder.staging())
            # A load of the open day drops what the day's earlier loads made live.
            keys = (
                None
                if load is None
                else stack.enter_context(
                    earlier_loads_keys(partition_files, context.partition_key, load, staging)
                )
            )
            stats = map_day(
                raw_file,
                staging / "events.jsonl.gz",
                staging / "quarantine.jsonl.gz",
                spec,
                staging,
                workers=workers,
                wrap_seen=None if keys is None else keys.wrap,
            )
            manifest = folder.publish(
                {
                    "events": staging / "events.jsonl.gz",
                    "quarantine": staging / "quarantine.jsonl.gz",
                    **({} if keys is None else keys.files()),
                },
                {
                    "raw_lines": stats.raw_lines,
                    "records": stats.records,
                    "duplicates_dropped": stats.duplicates_dropped,
                    "quarantined": stats.quarantined,
                    "quarantine_reasons": dict(stats.quarantine_reasons),
                    "event_types": dict(stats.event_types),
                    "processing_lag": stats.processing_lag_summary(),
                    "mapping_file": xdm_mapping.mapping_source(),
                    "max_quarantined_share": max_share,
                    "raw_sha256": raw_manifest["sha256"],
                    "raw_watermark_ms": raw_manifest["max_processing_time_ms"],
                    "mapped_at": datetime.now(UTC).isoformat(),
                    DAY_COMPLETE: raw_manifest.get(DAY_COMPLETE, True),
                    "intraday_load": load,
                    # The day so far, over its loads: what the quarantine share is judged on.
                    "day_raw_lines": stats.raw_lines + (keys.earlier_raw_lines if keys else 0),
                    "day_quarantined": stats.quarantined
                    + (keys.earlier_quarantined if keys else 0),
                    # What the checks judge these files by, taken as they were written.
                    "check_facts": stats.check_facts,
                    # The schema the records are proven to fit (None: no proof for it).
                    "proved_schema_sha256": proved_fingerprint(spec),
                },
            )
        if stats.quarantined:
            context.log.warning(
                f"quarantined {stats.quarantined} of {stats.raw_lines} events: "
                f"{dict(stats.quarantine_reasons)}; see {folder.location('quarantine', manifest)}"
            )
        return MaterializeResult(
            metadata={
                "dagster/row_count": stats.records,
                "dagster/uri": MetadataValue.path(folder.location("events", manifest)),
                "duplicates_dropped": stats.duplicates_dropped,
                "quarantined": stats.quarantined,
                "raw_lines": stats.raw_lines,
                # Records the schema checked in full (validity.py: the proof's sample).
                "records_validated_in_full": stats.records_validated_in_full,
                "quarantine_reasons": MetadataValue.json(manifest["quarantine_reasons"]),
                "quarantine_file": MetadataValue.path(folder.location("quarantine", manifest)),
                "event_types": MetadataValue.json(manifest["event_types"]),
                "mapping_file": MetadataValue.path(manifest["mapping_file"]),
                DAY_COMPLETE: manifest[DAY_COMPLETE],
            }
        )

    return xdm_experience_events
