"""``aep_ingested_batches``: the day's XDM records in the AEP dataset, exactly once.

A re-run of a day creates its batch as a replay of the day's live batches, so AEP swaps the old
records for the new ones instead of holding both. The day's batches are remembered twice: in the
Dagster materialization and in the partition's manifest file, so either alone is enough.
"""

from contextlib import suppress
from datetime import UTC, datetime

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    AssetsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    TimeWindowPartitionsDefinition,
    asset,
)

from mixpanel_assets.aep.client import AEPError
from mixpanel_assets.aep.day_batch import (
    DayBatchRequest,
    DayBatchResult,
    batch_failed,
    describe_failure,
    live_batches,
    load_day,
)
from mixpanel_assets.aep.resource import AEPResource
from mixpanel_assets.mixpanel.resource import MixpanelResource
from mixpanel_assets.settings import ConfigError
from mixpanel_assets.storage import PartitionFiles, PartitionFolder, PartitionMissingError
from mixpanel_assets.xdm.assets import XDM_EVENTS

AEP_BATCHES = "aep_ingested_batches"
BATCH_CHECK = "batch_succeeded"
PARTITION_TAG = "mixpanelAssetsPartition"


def build_aep_ingested_batches(partitions_def: TimeWindowPartitionsDefinition) -> AssetsDefinition:
    @asset(
        name=AEP_BATCHES,
        partitions_def=partitions_def,
        deps=[XDM_EVENTS],
        kinds={"adobe"},
        group_name="mixpanel_to_aep",
        check_specs=[
            AssetCheckSpec(
                BATCH_CHECK,
                asset=AEP_BATCHES,
                partitions_def=partitions_def,
                description="The batch succeeded and AEP accepted every uploaded record "
                "(a warning when AEP dropped some within the partial-ingestion allowance).",
            )
        ],
    )
    def aep_ingested_batches(
        context: AssetExecutionContext,
        aep: AEPResource,
        mixpanel: MixpanelResource,
        partition_files: PartitionFiles,
    ) -> MaterializeResult:
        """The day's batch in the AEP dataset, replacing the day's earlier batches."""
        key = context.partition_key
        xdm = partition_files.folder(XDM_EVENTS, key)
        folder = partition_files.folder(AEP_BATCHES, key)
        try:
            client = aep.get_client()
        except ConfigError as problem:
            raise Failure(str(problem), allow_retries=False) from None
        known = _previous_batch_ids(context, folder)
        try:
            predecessors = live_batches(client, known)
        except AEPError as problem:
            raise Failure(f"could not look up the day's earlier batches: {problem}") from None
        records = xdm.manifest()["records"]
        if records == 0:
            return _empty_day(key, predecessors)
        request = DayBatchRequest(
            dataset_id=aep.dataset_id,
            external_id=f"mixpanel-{mixpanel.project_id}-{key}-{context.run.run_id[:8]}",
            tags={PARTITION_TAG: [f"{mixpanel.project_id}/{key}"]},
            predecessors=predecessors,
            max_file_bytes=aep.upload_file_max_bytes,
            partial_ingestion_percent=aep.partial_ingestion_percent,
            timeout_seconds=aep.batch_timeout_seconds,
            poll_seconds=aep.poll_seconds,
        )
        with folder.staging() as work:
            try:
                result = load_day(client, xdm.file("events"), request, work)
            except (AEPError, ValueError) as problem:
                raise Failure(str(problem)) from None
            if batch_failed(result):
                raise Failure(describe_failure(result), metadata=_batch_metadata(result, []))
            folder.publish(
                {},
                {
                    "batch_ids": [result.batch_id],
                    "replaced_batch_ids": predecessors,
                    "record_count": result.record_count,
                    "loaded_at": datetime.now(UTC).isoformat(),
                },
            )
        context.log.info(
            f"batch {result.batch_id}: {result.record_count} records accepted"
            + (f", replacing {predecessors}" if predecessors else "")
        )
        return MaterializeResult(
            metadata=_batch_metadata(result, predecessors),
            check_results=[_batch_check(key, result)],
        )

    return aep_ingested_batches


def _previous_batch_ids(context: AssetExecutionContext, folder: PartitionFolder) -> list[str]:
    """The day's batches from its last materialization and from the partition manifest."""
    found: list[str] = []
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(
            asset_key=AssetKey(AEP_BATCHES), asset_partitions=[context.partition_key]
        ),
        limit=1,
    ).records
    if records and records[0].asset_materialization:
        value = records[0].asset_materialization.metadata.get("batch_ids")
        found.extend(value.value if value is not None else [])
    with suppress(PartitionMissingError):
        found.extend(folder.manifest()["batch_ids"])
    return list(dict.fromkeys(found))


def _empty_day(key: str, predecessors: list[str]) -> MaterializeResult:
    if predecessors:
        raise Failure(
            f"{key} now has no valid events, but AEP still holds batch(es) {predecessors} from an "
            "earlier run. AEP cannot replay a batch with an empty one: revert those batches in "
            "AEP (POST /batches/{id}?action=REVERT) if the day really is empty.",
            allow_retries=False,
        )
    return MaterializeResult(
        metadata={
            "dagster/row_count": 0,
            "batch_ids": MetadataValue.json([]),
            "replaced_batch_ids": MetadataValue.json([]),
        },
        check_results=[
            AssetCheckResult(
                check_name=BATCH_CHECK,
                passed=True,
                metadata={"partition": key, "note": "no records: no batch needed"},
            )
        ],
    )


def _batch_metadata(result: DayBatchResult, predecessors: list[str]) -> dict:
    return {
        "dagster/row_count": result.record_count,
        "batch_ids": MetadataValue.json([result.batch_id]),
        "replaced_batch_ids": MetadataValue.json(predecessors),
        "batch_status": result.status,
        "uploaded_records": result.uploaded_records,
        "failed_records": result.failed_record_count,
        "files": result.files,
        "bytes": result.bytes,
    }


def _batch_check(key: str, result: DayBatchResult) -> AssetCheckResult:
    complete = result.record_count == result.uploaded_records and not result.failed_record_count
    return AssetCheckResult(
        check_name=BATCH_CHECK,
        passed=complete,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "partition": key,
            "batch_id": result.batch_id,
            "status": result.status,
            "uploaded_records": result.uploaded_records,
            "accepted_records": result.record_count,
            "failed_records": result.failed_record_count,
        },
    )
