"""``xdm_experience_events`` and the checks that stop a bad day before it reaches AEP."""

import gzip
from collections.abc import Sequence
from datetime import UTC, datetime

import orjson
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetExecutionContext,
    AssetsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    TimeWindowPartitionsDefinition,
    asset,
    asset_check,
)

from mixpanel_assets.mixpanel.assets import RAW_EVENTS
from mixpanel_assets.mixpanel.resource import MixpanelResource
from mixpanel_assets.settings import ConfigError
from mixpanel_assets.storage import PartitionFiles
from mixpanel_assets.xdm.day_mapping import map_day
from mixpanel_assets.xdm.resource import XdmMappingResource
from mixpanel_assets.xdm.schema import empty_value_paths

XDM_EVENTS = "xdm_experience_events"
EXAMPLES_SHOWN = 5


def build_xdm_experience_events(
    partitions_def: TimeWindowPartitionsDefinition,
) -> AssetsDefinition:
    @asset(
        name=XDM_EVENTS,
        partitions_def=partitions_def,
        deps=[RAW_EVENTS],
        kinds={"python", "xdm"},
        group_name="mixpanel_to_aep",
    )
    def xdm_experience_events(
        context: AssetExecutionContext,
        mixpanel: MixpanelResource,
        xdm_mapping: XdmMappingResource,
        partition_files: PartitionFiles,
    ) -> MaterializeResult:
        """The day's events as XDM ExperienceEvents (gzip JSON lines), deduplicated by
        Mixpanel's key; events that cannot be valid XDM are quarantined with their reasons."""
        try:
            spec = xdm_mapping.spec(mixpanel)
        except (ConfigError, ValueError) as problem:
            raise Failure(str(problem), allow_retries=False) from None
        raw = partition_files.folder(RAW_EVENTS, context.partition_key)
        folder = partition_files.folder(XDM_EVENTS, context.partition_key)
        with folder.staging() as staging:
            stats = map_day(
                raw.file("events"),
                staging / "events.jsonl.gz",
                staging / "quarantine.jsonl.gz",
                spec,
                staging,
            )
            manifest = folder.publish(
                {
                    "events": staging / "events.jsonl.gz",
                    "quarantine": staging / "quarantine.jsonl.gz",
                },
                {
                    "raw_lines": stats.raw_lines,
                    "records": stats.records,
                    "duplicates_dropped": stats.duplicates_dropped,
                    "quarantined": stats.quarantined,
                    "quarantine_reasons": dict(stats.quarantine_reasons),
                    "event_types": dict(stats.event_types),
                    "raw_sha256": raw.manifest()["sha256"],
                    "mapped_at": datetime.now(UTC).isoformat(),
                },
            )
        if stats.quarantined:
            context.log.warning(
                f"quarantined {stats.quarantined} of {stats.raw_lines} events: "
                f"{dict(stats.quarantine_reasons)}; see {folder.file('quarantine')}"
            )
        return MaterializeResult(
            metadata={
                "dagster/row_count": stats.records,
                "dagster/uri": MetadataValue.path(str(folder.file("events"))),
                "duplicates_dropped": stats.duplicates_dropped,
                "quarantined": stats.quarantined,
                "raw_lines": stats.raw_lines,
                "quarantine_reasons": MetadataValue.json(manifest["quarantine_reasons"]),
                "quarantine_file": MetadataValue.path(str(folder.file("quarantine"))),
                "event_types": MetadataValue.json(manifest["event_types"]),
            }
        )

    return xdm_experience_events


def build_xdm_checks(
    partitions_def: TimeWindowPartitionsDefinition,
) -> Sequence[AssetChecksDefinition]:
    @asset_check(
        asset=XDM_EVENTS,
        name="required_xdm_fields",
        partitions_def=partitions_def,
        blocking=True,
        description="Every record has _id, timestamp and one primary identity, and no empty "
        "values; the file holds as many records as the manifest says. Blocking: a bad day "
        "never reaches AEP.",
    )
    def required_xdm_fields(
        context: AssetCheckExecutionContext, partition_files: PartitionFiles
    ) -> AssetCheckResult:
        folder = partition_files.folder(XDM_EVENTS, context.partition_key)
        problems: list[str] = []
        problem_count = records = 0
        with gzip.open(folder.file("events"), "rb") as lines:
            for records, line in enumerate(lines, start=1):
                missing = _missing_required(orjson.loads(line))
                if missing:
                    problem_count += 1
                    if len(problems) < EXAMPLES_SHOWN:
                        problems.append(f"record {records}: {missing}")
        expected = folder.manifest()["records"]
        return AssetCheckResult(
            passed=problem_count == 0 and records == expected,
            metadata={
                "partition": context.partition_key,
                "records_read": records,
                "records_in_manifest": expected,
                "records_with_problems": problem_count,
                "examples": MetadataValue.json(problems),
            },
        )

    @asset_check(
        asset=XDM_EVENTS,
        name="counts_reconcile",
        partitions_def=partitions_def,
        blocking=True,
        additional_deps=[RAW_EVENTS],
        description="Every exported line is accounted for: raw lines = XDM records + "
        "duplicates dropped + quarantined, and the mapping read the current raw export.",
    )
    def counts_reconcile(
        context: AssetCheckExecutionContext, partition_files: PartitionFiles
    ) -> AssetCheckResult:
        raw = partition_files.folder(RAW_EVENTS, context.partition_key).manifest()
        xdm = partition_files.folder(XDM_EVENTS, context.partition_key).manifest()
        accounted = xdm["records"] + xdm["duplicates_dropped"] + xdm["quarantined"]
        return AssetCheckResult(
            passed=raw["line_count"] == accounted and raw["sha256"] == xdm["raw_sha256"],
            metadata={
                "partition": context.partition_key,
                "raw_lines": raw["line_count"],
                "xdm_records": xdm["records"],
                "duplicates_dropped": xdm["duplicates_dropped"],
                "quarantined": xdm["quarantined"],
                "same_raw_export": raw["sha256"] == xdm["raw_sha256"],
            },
        )

    return [required_xdm_fields, counts_reconcile]


def _missing_required(record: dict) -> str:
    """What AEP's required-field rules find missing in ``record`` ('' when nothing)."""
    missing = [field for field in ("_id", "timestamp") if not record.get(field)]
    identities = record.get("identityMap") or {}
    primaries = sum(
        1 for items in identities.values() for item in items if item.get("primary") is True
    )
    if primaries != 1:
        missing.append(f"exactly one primary identity (found {primaries})")
    empty = empty_value_paths(record)
    if empty:
        missing.append(f"non-empty values at {', '.join(empty)}")
    return ", ".join(missing)
