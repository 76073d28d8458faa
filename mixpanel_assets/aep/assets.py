"""``aep_ingested_batches``: the day's XDM records in the AEP dataset, exactly once.

A thin asset over the client and the loaders: it checks the day against the dataset's own
schema, settles the day's earlier batches (aborting a dead run's, waiting for one in flight),
creates one batch that replays the day's live batches, and records what AEP did. The day's
batches are remembered in the Dagster materialization and in the partition's manifest, and AEP
knows them by their tags, so any one of the three is enough to find them.
"""

from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetRecordsFilter,
    AssetsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    TimeWindowPartitionsDefinition,
    asset,
)

from mixpanel_assets.aep.client import AEPClient
from mixpanel_assets.aep.day_batch import (
    DayBatchRequest,
    DayBatchResult,
    batch_failed,
    describe_failed_row,
    describe_failure,
    load_day,
)
from mixpanel_assets.aep.errors import AEPError
from mixpanel_assets.aep.increments import DayTarget, load_increment, needs_increment
from mixpanel_assets.aep.replay import SettledDay, settle_day
from mixpanel_assets.aep.resource import AEPResource
from mixpanel_assets.aep.target_schema import SchemaMismatchError, read_target_schema
from mixpanel_assets.aep.ui_links import dataset_url
from mixpanel_assets.coordination import HeldLock
from mixpanel_assets.errors import LockLostError
from mixpanel_assets.intraday.ledger import DayLedger
from mixpanel_assets.intraday.open_day import DAY_COMPLETE
from mixpanel_assets.mixpanel.assets import GROUP, RAW_EVENTS, WATERMARK
from mixpanel_assets.mixpanel.resource import MixpanelResource
from mixpanel_assets.projects import FLAT, ProjectKeys
from mixpanel_assets.readable import size_text, utc_instant
from mixpanel_assets.settings import ConfigError
from mixpanel_assets.storage import PartitionFiles, PartitionFolder, PartitionMissingError
from mixpanel_assets.xdm.assets import XDM_EVENTS
from mixpanel_assets.xdm.resource import XdmMappingResource
from mixpanel_assets.xdm.schema import xdm_validator

AEP_BATCHES = "aep_ingested_batches"
BATCH_CHECK = "batch_succeeded"
AEP_DAY_TAG = "mixpanelAssetsPartition"


def build_aep_ingested_batches(
    partitions_def: TimeWindowPartitionsDefinition,
    project: ProjectKeys = FLAT,
    dataset_id: str | None = None,
) -> AssetsDefinition:
    """The asset of ``project``; ``dataset_id`` (the project's own) replaces AEP_DATASET_ID's."""

    @asset(
        name=AEP_BATCHES,
        key_prefix=project.prefix,
        partitions_def=partitions_def,
        deps=[project.asset(XDM_EVENTS)],
        kinds={"adobe"},
        group_name=project.named(GROUP),
        required_resource_keys={
            "aep",
            *(project.named(name) for name in ("mixpanel", "xdm_mapping", "partition_files")),
        },
        check_specs=[
            AssetCheckSpec(
                BATCH_CHECK,
                asset=project.asset(AEP_BATCHES),
                partitions_def=partitions_def,
                description="The batch succeeded and AEP accepted every uploaded record "
                "(a warning when AEP dropped some within the partial-ingestion allowance).",
            )
        ],
    )
    def aep_ingested_batches(context: AssetExecutionContext) -> MaterializeResult:
        """The day's batch in the AEP dataset, replacing the day's earlier batches."""
        aep: AEPResource = context.resources.aep.for_dataset(dataset_id)
        mixpanel: MixpanelResource = project.resource(context, "mixpanel")
        xdm_mapping: XdmMappingResource = project.resource(context, "xdm_mapping")
        partition_files: PartitionFiles = project.resource(context, "partition_files")
        key = context.partition_key
        xdm = partition_files.folder(XDM_EVENTS, key)
        xdm_manifest = xdm.manifest()  # once: the file loaded and the figures kept must agree
        _require_checked_day(key, partition_files.folder(RAW_EVENTS, key).manifest(), xdm_manifest)
        folder = partition_files.folder(AEP_BATCHES, key)
        try:
            client = aep.get_client()
            project_validator = xdm_validator(
                xdm_mapping.tenant_id, xdm_mapping.rules().custom_tenant_fields()
            )
        except (ConfigError, ValueError) as problem:
            raise Failure(str(problem), allow_retries=False) from None
        with xdm.local_copy("events", xdm_manifest) as records_path:
            try:
                target = read_target_schema(client, aep.dataset_id, project_validator)
                if target.proven_by(xdm_manifest.get("proved_schema_sha256")):
                    context.log.info(
                        f"the schema of dataset {aep.dataset_id} ({target.schema_id}) is the one "
                        "the mapping proved the day's records against (fingerprint "
                        f"{target.fingerprint}): the {xdm_manifest['records']} records are not "
                        "checked against it again"
                    )
                else:
                    checked = target.check_records(
                        records_path,
                        lambda count: context.log.info(f"target schema: {count} records checked"),
                    )
                    context.log.info(f"target schema: all {checked} records fit")
                dataset = _dataset_metadata(client.get_dataset(aep.dataset_id), aep)
            except SchemaMismatchError as problem:
                raise Failure(str(problem), allow_retries=False) from None
            except AEPError as problem:
                raise Failure(f"could not read the target dataset's schema: {problem}") from None
            day_tag = f"{mixpanel.project_id}/{key}"
            # One run of a day at a time from here on, on whatever machine: two would both
            # replay the same predecessor and both stay live (the queued run coordinator's
            # per-day limit does not cover the CLI).
            with partition_files.coordinator().lock(f"{AEP_BATCHES}:{day_tag}") as day_lock:
                ledger = DayLedger.of(partition_files, key)
                if needs_increment(ledger.read(), xdm_manifest):
                    day = DayTarget(
                        client, aep, {AEP_DAY_TAG: day_tag}, _external_id(day_tag, context)
                    )
                    with folder.staging() as work:
                        materialized, _ = load_increment(
                            context, day, ledger, xdm, xdm_manifest, records_path, work
                        )
                else:
                    materialized = _load_day(
                        context, aep, folder, records_path, xdm_manifest, day_tag, client, day_lock
                    )
                return _with_readable_metadata(materialized, dataset)

    return aep_ingested_batches


def _load_day(
    context: AssetExecutionContext,
    aep: AEPResource,
    folder: PartitionFolder,
    records_path: Path,
    xdm_manifest: dict[str, Any],
    day_tag: str,
    client: AEPClient,
    day_lock: HeldLock,
) -> MaterializeResult:
    """Settle the day's earlier batches, load the new one and record it."""
    key = context.partition_key
    try:
        settled = settle_day(
            client,
            dataset_id=aep.dataset_id,
            tags={AEP_DAY_TAG: day_tag},
            known_batch_ids=_remembered_batch_ids(context, folder),
            timeout_seconds=aep.batch_timeout_seconds,
            poll_seconds=aep.poll_seconds,
        )
    except AEPError as problem:
        raise Failure(f"could not settle the day's earlier batches: {problem}") from None
    if settled.aborted:
        context.log.warning(f"aborted batch(es) {settled.aborted}, left loading by a dead run")
    # Once the batch exists, a later run of the day sees it and waits for it or aborts it; until
    # then the day's lock must have been held without a gap since the batches were settled.
    try:
        day_lock.verify()
    except LockLostError as problem:
        raise Failure(f"{problem} No batch was created.") from None
    watermark = xdm_manifest["raw_watermark_ms"] or 0
    if xdm_manifest["records"] == 0:
        return _empty_day(key, settled, watermark)
    request = DayBatchRequest(
        dataset_id=aep.dataset_id,
        external_id=_external_id(day_tag, context),
        tags={AEP_DAY_TAG: [day_tag]},
        predecessors=settled.live,
        max_file_bytes=aep.upload_file_max_bytes,
        partial_ingestion_percent=aep.partial_ingestion_percent,
        timeout_seconds=aep.batch_timeout_seconds,
        poll_seconds=aep.poll_seconds,
    )
    with folder.staging() as work:
        try:
            result = load_day(client, records_path, request, work)
        except (AEPError, ValueError) as problem:
            raise Failure(str(problem)) from None
    metadata = {**_batch_metadata(result, settled), WATERMARK: watermark, DAY_COMPLETE: True}
    if batch_failed(result):
        raise Failure(describe_failure(result), metadata=metadata)
    if result.failed_percent > aep.partial_ingestion_percent:
        raise Failure(
            f"{describe_failure(result)} That is {result.failed_percent:.2f}% of the day, "
            f"over the allowed {aep.partial_ingestion_percent:g}%. AEP accepted the batch "
            f"anyway: {result.batch_id} is live and replaced {settled.live or 'nothing'}; fix "
            "the records and re-run the day to replace it.",
            metadata=metadata,
        )
    loaded_at = datetime.now(UTC).isoformat()
    metadata["loaded_at"] = loaded_at
    folder.publish(
        {},
        {
            "batch_ids": [result.batch_id],
            "replaced_batch_ids": settled.live,
            "record_count": result.record_count,
            "raw_watermark_ms": watermark,
            "loaded_at": loaded_at,
        },
    )
    context.log.info(
        f"batch {result.batch_id}: {result.record_count} records accepted"
        + (f", replacing {settled.live}" if settled.live else "")
    )
    return MaterializeResult(metadata=metadata, check_results=[_batch_check(key, result)])


def _external_id(day_tag: str, context: AssetExecutionContext) -> str:
    return f"mixpanel-{day_tag.replace('/', '-')}-{context.run.run_id[:8]}"


def _remembered_batch_ids(context: AssetExecutionContext, folder: PartitionFolder) -> list[str]:
    """The day's batches from its last materialization and from the partition manifest."""
    found: list[str] = []
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[context.partition_key]),
        limit=1,
    ).records
    if records and records[0].asset_materialization:
        value = records[0].asset_materialization.metadata.get("batch_ids")
        found.extend(value.value if value is not None else [])
    with suppress(PartitionMissingError):
        found.extend(folder.manifest()["batch_ids"])
    return list(dict.fromkeys(found))


def _require_checked_day(key: str, raw: dict[str, Any], xdm: dict[str, Any]) -> None:
    """Refuse a day whose XDM files would fail the blocking checks a separate run may skip."""
    problems = []
    if xdm["raw_sha256"] != raw["sha256"]:
        problems.append("it was mapped from an earlier raw export than the current one")
    if xdm["records"] + xdm["duplicates_dropped"] + xdm["quarantined"] != raw["line_count"]:
        problems.append("its counts do not reconcile with the raw export")
    raw_lines = xdm.get("day_raw_lines", xdm["raw_lines"])  # an open day: its loads so far
    if (
        raw_lines
        and xdm.get("day_quarantined", xdm["quarantined"]) / raw_lines
        > xdm["max_quarantined_share"]
    ):
        problems.append("its quarantined share is over max_quarantined_share")
    if problems:
        raise Failure(
            f"{key} is not loaded into AEP: {'; '.join(problems)}. Materialize "
            "xdm_experience_events for the day again (with its checks) first.",
            allow_retries=False,
        )


def _empty_day(key: str, settled: SettledDay, watermark: int) -> MaterializeResult:
    if settled.live:
        raise Failure(
            f"{key} now has no valid events, but AEP still holds batch(es) {settled.live} from an "
            "earlier run. AEP cannot replay a batch with an empty one: revert those batches in "
            "AEP (POST /batches/{id}?action=REVERT) if the day really is empty.",
            allow_retries=False,
        )
    return MaterializeResult(
        metadata={
            "dagster/row_count": 0,
            "batch_ids": MetadataValue.json([]),
            "replaced_batch_ids": MetadataValue.json([]),
            "aborted_batch_ids": MetadataValue.json(settled.aborted),
            WATERMARK: watermark,
            DAY_COMPLETE: True,
        },
        check_results=[
            AssetCheckResult(
                check_name=BATCH_CHECK,
                passed=True,
                metadata={"partition": key, "note": "no records: no batch needed"},
            )
        ],
    )


def _batch_metadata(result: DayBatchResult, settled: SettledDay) -> dict:
    return {
        "dagster/row_count": result.record_count,
        "batch_ids": MetadataValue.json([result.batch_id]),
        "replaced_batch_ids": MetadataValue.json(settled.live),
        "aborted_batch_ids": MetadataValue.json(settled.aborted),
        "batch_status": result.status,
        "uploaded_records": result.uploaded_records,
        "failed_records": result.failed_record_count,
        "files": result.files,
        "uploaded_size": size_text(result.bytes),
    }


def _batch_check(key: str, result: DayBatchResult) -> AssetCheckResult:
    complete = result.record_count == result.uploaded_records and not result.failed_record_count
    metadata = {
        "partition": key,
        "batch_id": result.batch_id,
        "status": result.status,
        "uploaded_records": result.uploaded_records,
        "accepted_records": result.record_count,
        "failed_records": result.failed_record_count,
    }
    if result.failed_rows:
        metadata["failed_rows"] = MetadataValue.json(
            [describe_failed_row(row) for row in result.failed_rows]
        )
    return AssetCheckResult(
        check_name=BATCH_CHECK,
        passed=complete,
        severity=AssetCheckSeverity.WARN,
        metadata=metadata,
    )


def _dataset_metadata(dataset: dict[str, Any], aep: AEPResource) -> dict[str, Any]:
    """The target dataset: its Catalog name, id and page in the AEP UI."""
    return {
        "aep_dataset": str(dataset.get("name") or "(unnamed)"),
        "aep_dataset_id": aep.dataset_id,
        "aep_dataset_url": MetadataValue.url(
            dataset_url(aep.org_id, aep.sandbox_name, aep.dataset_id)
        ),
    }


def _with_readable_metadata(
    result: MaterializeResult, dataset: dict[str, Any]
) -> MaterializeResult:
    """``result`` with the dataset's name and links, each live batch listed with a link to the
    dataset page that shows it, and the watermark as an ISO 8601 UTC instant."""
    metadata = dict(result.metadata or {})
    live = metadata.get("batch_ids")
    batch_ids = live.value if isinstance(live, MetadataValue) else live or []
    page = dataset["aep_dataset_url"].value
    name = dataset["aep_dataset_id"]
    rows = "".join(f"| `{batch}` | [dataset {name}]({page}) |\n" for batch in batch_ids)
    readable: dict[str, Any] = {
        **dataset,
        "batches": MetadataValue.md(
            f"| live batch | listed on the dataset page |\n|---|---|\n{rows}"
            if rows
            else "no live batch"
        ),
    }
    watermark = metadata.get(WATERMARK)
    if watermark is not None:
        value = watermark.value if isinstance(watermark, MetadataValue) else watermark
        readable["watermark"] = utc_instant(value or None)
    return result._replace(metadata={**metadata, **readable})
