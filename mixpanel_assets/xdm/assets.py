"""``xdm_experience_events``: the day mapped to XDM, repeats dropped, bad events quarantined."""

import os
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

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
from mixpanel_assets.progress import PROGRESS_SECONDS, Throttle
from mixpanel_assets.projects import FLAT, ProjectKeys
from mixpanel_assets.readable import size_text, utc_instant
from mixpanel_assets.settings import ConfigError
from mixpanel_assets.storage import PartitionFiles
from mixpanel_assets.xdm.column_schema import xdm_column_schema
from mixpanel_assets.xdm.day_mapping import DayMappingStats, map_day
from mixpanel_assets.xdm.resource import XdmMappingResource
from mixpanel_assets.xdm.schema_fingerprint import proved_fingerprint
from mixpanel_assets.xdm.spec import MAPPING_VARIABLE, MappingFileError, load_rules

XDM_EVENTS = "xdm_experience_events"
# The day's quarantine is logged as a warning from this fraction of max_quarantined_share on.
QUARANTINE_WARNING_FRACTION = 0.8


def build_xdm_experience_events(
    partitions_def: TimeWindowPartitionsDefinition,
    project: ProjectKeys = FLAT,
    mapping_file: str | None = None,
) -> AssetsDefinition:
    """The ``xdm_experience_events`` asset of ``project``.

    ``mapping_file`` (the project's own) replaces MIXPANEL_ASSETS_MAPPING's for the columns it
    declares.
    """

    @asset(
        name=XDM_EVENTS,
        key_prefix=project.prefix,
        partitions_def=partitions_def,
        deps=[project.asset(RAW_EVENTS)],
        kinds={"python", "xdm"},
        metadata=_declared_columns(mapping_file),
        group_name=project.named(GROUP),
        required_resource_keys={
            project.named(name) for name in ("mixpanel", "xdm_mapping", "partition_files")
        },
    )
    def xdm_experience_events(context: AssetExecutionContext) -> MaterializeResult:
        """The day's events as XDM ExperienceEvents (gzip JSON lines), deduplicated by their key.

        The key is Mixpanel's; events that cannot be valid XDM are quarantined with their reasons.
        """
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
                on_progress=MappingProgress(context.log.info, raw_manifest["line_count"]),
            )
            sizes = {
                role: size_text((staging / f"{role}.jsonl.gz").stat().st_size)
                for role in ("events", "quarantine")
            }
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
            _log_quarantine(context, manifest, folder.location("quarantine", manifest))
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
                "dagster/column_schema": xdm_column_schema(
                    xdm_mapping.rules(), xdm_mapping.tenant_id
                ),
                "events_size": sizes["events"],
                "quarantine_size": sizes["quarantine"],
                # Mixpanel's latest processing time in the raw export (ISO 8601, UTC).
                "raw_watermark": utc_instant(manifest["raw_watermark_ms"]),
                "mapped_at": manifest["mapped_at"],
            }
        )

    return xdm_experience_events


def _log_quarantine(context: AssetExecutionContext, manifest: dict[str, Any], where: str) -> None:
    """What was quarantined: INFO on a normal day, WARNING once the day's share nears its limit
    (the blocking check ``quarantine_share`` fails a day over it)."""
    share = manifest["day_quarantined"] / manifest["day_raw_lines"]
    limit = manifest["max_quarantined_share"]
    near = share >= QUARANTINE_WARNING_FRACTION * limit
    log = context.log.warning if near else context.log.info
    log(
        f"quarantined {manifest['quarantined']} of {manifest['raw_lines']} events "
        f"({share:.2%} of the day, limit {limit:.2%}"
        + (", near or over it" if near else "")
        + f"): {manifest['quarantine_reasons']}; see {where}"
    )


class MappingProgress:
    """Logs the day's counts so far while it is mapped, every ``PROGRESS_SECONDS``."""

    def __init__(self, log: Callable[[str], None], total_lines: int) -> None:
        self._log = log
        self._total = total_lines
        self._throttle = Throttle(PROGRESS_SECONDS)

    def __call__(self, stats: DayMappingStats) -> None:
        if not self._throttle.due():
            return
        done = f" ({stats.raw_lines / self._total:.0%})" if self._total else ""
        self._log(
            f"mapping: {stats.raw_lines:,} of {self._total:,} raw lines{done}: "
            f"{stats.records:,} records written, {stats.quarantined:,} quarantined, "
            f"{stats.duplicates_dropped:,} duplicates dropped"
        )


def _declared_columns(mapping_file: str | None) -> dict[str, Any]:
    """The definition's ``dagster/column_schema``, from the mapping as the code loads; none when
    that mapping cannot be read (each run checks it first and says what is wrong)."""
    try:
        rules = load_rules(mapping_file or os.environ.get(MAPPING_VARIABLE, ""))
    except MappingFileError:
        return {}
    return {"dagster/column_schema": xdm_column_schema(rules)}
