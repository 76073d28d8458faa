"""An open day's loads into AEP as increments, one batch each; the close appends the last.

Design notes: docs/design-notes.md, `aep/increments.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    Failure,
    MaterializeResult,
    MetadataValue,
)
from isal import igzip

from mixpanel_assets.aep.client import AEPClient
from mixpanel_assets.aep.day_batch import (
    DayBatchRequest,
    DayBatchResult,
    batch_failed,
    describe_failure,
    load_day,
)
from mixpanel_assets.aep.errors import AEPError
from mixpanel_assets.aep.replay import settle_day
from mixpanel_assets.aep.resource import AEPResource
from mixpanel_assets.intraday.ledger import DayLedger, LedgerState
from mixpanel_assets.intraday.loaded_keys import LoadedKeys
from mixpanel_assets.intraday.open_day import DAY_COMPLETE, fresh_until
from mixpanel_assets.mixpanel.assets import WATERMARK
from mixpanel_assets.progress import PROGRESS_SECONDS, Throttle
from mixpanel_assets.storage import PartitionFolder

# Catalog tag of an increment's batch: the processing-time range "start..end" it loaded.
RANGE_TAG = "mixpanelAssetsLoadRange"
_IDS_PER_LOOK_UP = 4096


@dataclass(frozen=True)
class DayTarget:
    """Where and how the day's batches go."""

    client: AEPClient
    aep: AEPResource
    day_tags: dict[str, str]  # the Catalog tags every batch of the day carries
    external_prefix: str


def needs_increment(ledger: LedgerState, xdm_manifest: dict[str, Any]) -> bool:
    """True for a load of the open day, and for the first run after it closed."""
    return xdm_manifest.get("intraday_load") is not None or (
        bool(ledger.loads) and not ledger.complete
    )


def load_increment(
    context: AssetExecutionContext,
    target: DayTarget,
    ledger: DayLedger,
    xdm: PartitionFolder,
    xdm_manifest: dict[str, Any],
    records_path: Path,
    work: Path,
) -> tuple[MaterializeResult, DayBatchResult | None]:
    """Append the load's batch (or close the day); record it in the ledger; describe the day."""
    state = ledger.read()
    load = xdm_manifest.get("intraday_load")
    if load is not None and (state.complete or len(state.loads) != load["number"] - 1):
        raise Failure(
            f"{context.partition_key}: this run mapped the day's load {load['number']}, but the "
            f"ledger now holds {len(state.loads)} load(s): another run of the day loaded "
            "meanwhile. Materialize the day again from mixpanel_raw_events.",
            allow_retries=False,
        )
    live = _settle(context, target, state)
    orphans = [batch for batch in live if batch not in state.batch_ids]
    gone = [batch for batch in state.batch_ids if batch not in live]
    if load is not None:
        if gone:
            raise Failure(
                f"{context.partition_key}: batch(es) {gone} of the day's earlier loads are no "
                "longer live in AEP (reverted or deleted outside this pipeline), so the day's "
                "loads no longer add up. Run the day again once it has closed: that run replays "
                "every batch of the day with one batch of the whole day.",
                allow_retries=False,
            )
        return _append(context, target, ledger, state, orphans, load, xdm, xdm_manifest, work)
    return _close(context, target, ledger, state, live, records_path, xdm_manifest, work)


def _settle(context: AssetExecutionContext, target: DayTarget, state: LedgerState) -> list[str]:
    """The day's live batches, once unfinished ones are settled, oldest first."""
    try:
        settled = settle_day(
            target.client,
            dataset_id=target.aep.dataset_id,
            tags=target.day_tags,
            known_batch_ids=state.batch_ids,
            timeout_seconds=target.aep.batch_timeout_seconds,
            poll_seconds=target.aep.poll_seconds,
        )
    except AEPError as problem:
        raise Failure(f"could not settle the day's earlier batches: {problem}") from None
    if settled.aborted:
        context.log.warning(f"aborted batch(es) {settled.aborted}, left loading by a dead run")
    orphans = [batch for batch in settled.live if batch not in state.batch_ids]
    if orphans:
        context.log.warning(
            f"batch(es) {orphans} went live in a load that died before recording them; this "
            "run's batch holds their events again and replays them"
        )
    return settled.live


def _append(
    context: AssetExecutionContext,
    target: DayTarget,
    ledger: DayLedger,
    state: LedgerState,
    orphans: list[str],
    load: dict[str, Any],
    xdm: PartitionFolder,
    xdm_manifest: dict[str, Any],
    work: Path,
) -> tuple[MaterializeResult, DayBatchResult | None]:
    start, end = load["start_ms"], load["end_ms"]
    for orphan in orphans:
        _check_orphan_range(target.client, orphan, start, end)
    result = None
    records = xdm_manifest["records"]
    if records == 0 and orphans:
        raise Failure(
            f"{context.partition_key}: batch(es) {orphans} are live but unknown to the ledger, and "
            "this load found no new events to replace them with. Revert them in AEP "
            "(POST /batches/{id}?action=REVERT) and run the day again.",
            allow_retries=False,
        )
    if records:
        with xdm.local_copy("events", xdm_manifest) as events:
            result = _ingest(target, events, f"{start}..{end}", orphans, work, load["number"])
    roles = [role for role in xdm_manifest["files"] if role.startswith("keys-")]
    with _local_copies(xdm, xdm_manifest, [*roles, "quarantine"]) as files:
        state = ledger.commit(
            state,
            {
                "start_ms": start,
                "end_ms": end,
                "request": load["request"],
                "batch_id": result.batch_id if result else None,
                "records": result.record_count if result else 0,
                "uploaded_records": result.uploaded_records if result else 0,
                "raw_lines": xdm_manifest["raw_lines"],
                "duplicates_dropped": xdm_manifest["duplicates_dropped"],
                "quarantined": xdm_manifest["quarantined"],
                "replaced_batch_ids": orphans,
            },
            files,
            complete=False,
        )
    context.log.info(
        f"load {load['number']} of {context.partition_key}: "
        + (
            f"batch {result.batch_id}, {result.record_count} new records"
            if result
            else "nothing new"
        )
        + f"; the day holds {state.live_records} events loaded up to {fresh_until(end).value}"
    )
    _refuse_over_allowance(target, result)
    return _day_result(context, state, result, orphans, end, complete=False), result


def _close(
    context: AssetExecutionContext,
    target: DayTarget,
    ledger: DayLedger,
    state: LedgerState,
    live: list[str],
    records_path: Path,
    xdm_manifest: dict[str, Any],
    work: Path,
) -> tuple[MaterializeResult, DayBatchResult | None]:
    """The last increment: the whole day's records that no load made live."""
    orphans = [batch for batch in live if batch not in state.batch_ids]
    recorded_live = all(batch in live for batch in state.batch_ids)
    increment = work / "increment.jsonl.gz"
    with ledger.loaded_keys(state) as earlier:
        already_live, new = _split_new(records_path, earlier, increment, context.log.info)
    watermark = xdm_manifest["raw_watermark_ms"] or 0
    number = len(state.loads) + 1
    replaced = orphans
    whole_day = not (recorded_live and already_live == state.live_records and (new or not orphans))
    if not whole_day:
        result = _ingest(target, increment, "close", orphans, work, number) if new else None
        entry_records = result.record_count if result else 0
        context.log.info(
            f"closed {context.partition_key}: {new} events the loads had not made live"
        )
    else:
        # Some live event is no longer in the day, or a recorded batch is no longer live: only
        # a replay of every batch makes the dataset what a day loaded once would hold.
        replaced = live
        context.log.warning(
            f"{context.partition_key}: the whole day holds {already_live} of the "
            f"{state.live_records} events its loads made live; replaying the day's batches "
            "with one batch of the day"
        )
        result = _ingest(target, records_path, "close", replaced, work, number)
        entry_records = result.record_count - state.live_records
    state = ledger.commit(
        state,
        {
            "start_ms": state.watermark_ms,
            "end_ms": watermark,
            "request": None,
            "batch_id": result.batch_id if result else None,
            "records": entry_records,
            "uploaded_records": result.uploaded_records if result else 0,
            "replaced_batch_ids": replaced,
            "replayed_whole_day": whole_day,
        },
        {},
        complete=True,
    )
    _refuse_over_allowance(target, result)
    return _day_result(context, state, result, replaced, watermark, complete=True), result


def _refuse_over_allowance(target: DayTarget, result: DayBatchResult | None) -> None:
    """Fail the run, once the ledger has the batch (it is live), when AEP dropped more rows
    than the partial-ingestion allowance."""
    allowed = target.aep.partial_ingestion_percent
    if result is not None and result.failed_percent > allowed:
        raise Failure(
            f"{describe_failure(result)} That is {result.failed_percent:.2f}% of the load, over "
            f"the allowed {allowed:g}%. AEP accepted the batch anyway: {result.batch_id} is "
            "live; fix the records and re-run the day once it has closed to replace its batches."
        )


def _split_new(
    records_path: Path, earlier: LoadedKeys, increment: Path, log: Callable[[str], None]
) -> tuple[int, int]:
    """(records whose _id an earlier load made live, records written to ``increment``)."""
    already = new = 0
    pending: list[tuple[bytes, bytes]] = []
    throttle = Throttle(PROGRESS_SECONDS)

    def flush(out: Any) -> None:
        nonlocal already, new
        found = earlier.find([key for key, _ in pending])
        fresh = [line for key, line in pending if key not in found]
        already += len(pending) - len(fresh)
        new += len(fresh)
        out.write(b"".join(fresh))
        pending.clear()

    with igzip.open(records_path, "rb") as lines, igzip.open(increment, "wb", 1) as out:
        for line in lines:
            pending.append((bytes.fromhex(orjson.loads(line)["_id"]), line))
            if len(pending) >= _IDS_PER_LOOK_UP:
                flush(out)
                if throttle.due():
                    log(f"closing the day: {already + new} records compared, {new} not yet live")
        flush(out)
    return already, new


def _ingest(
    target: DayTarget,
    records: Path,
    range_text: str,
    predecessors: list[str],
    work: Path,
    number: int,
) -> DayBatchResult:
    request = DayBatchRequest(
        dataset_id=target.aep.dataset_id,
        external_id=f"{target.external_prefix}-load{number}",
        tags={
            **{name: [value] for name, value in target.day_tags.items()},
            RANGE_TAG: [range_text],
        },
        predecessors=predecessors,
        max_file_bytes=target.aep.upload_file_max_bytes,
        partial_ingestion_percent=target.aep.partial_ingestion_percent,
        timeout_seconds=target.aep.batch_timeout_seconds,
        poll_seconds=target.aep.poll_seconds,
    )
    parts = work / f"parts-{number}"
    parts.mkdir()
    try:
        result = load_day(target.client, records, request, parts)
    except (AEPError, ValueError) as problem:
        raise Failure(str(problem)) from None
    if batch_failed(result):
        raise Failure(describe_failure(result))
    return result


def _check_orphan_range(client: AEPClient, batch_id: str, start: int | None, end: int) -> None:
    """An unrecorded live batch must have loaded from where this load starts, and no further."""
    try:
        values = (client.get_batch(batch_id).get("tags") or {}).get(RANGE_TAG) or []
    except AEPError as problem:
        raise Failure(f"could not read batch {batch_id}: {problem}") from None
    low, _, high = (values[0] if values else "").partition("..")
    covered = low == str(start) and high.isdigit() and int(high) <= end
    if not covered:
        raise Failure(
            f"batch {batch_id} of this day is live, unknown to the day's ledger, and its range "
            f"tag {values} is not within this load's ({start}..{end}], so this load cannot "
            "replace it safely. Revert it in AEP (POST /batches/{id}?action=REVERT) and run the "
            "day again.",
            allow_retries=False,
        )


@contextmanager
def _local_copies(
    folder: PartitionFolder, manifest: dict[str, Any], roles: list[str]
) -> Iterator[dict[str, Path]]:
    """Local copies of some of a partition's files, by role, for the block."""
    with ExitStack() as stack:
        yield {role: stack.enter_context(folder.local_copy(role, manifest)) for role in roles}


def _day_result(
    context: AssetExecutionContext,
    state: LedgerState,
    result: DayBatchResult | None,
    replaced: list[str],
    watermark: int,
    *,
    complete: bool,
) -> MaterializeResult:
    """The whole day so far, as the contract's keys describe a day loaded once."""
    if state.loads[-1].get("replayed_whole_day"):
        live = [result.batch_id] if result else []
    else:
        live = [batch for batch in state.batch_ids if batch not in replaced]
    metadata = {
        "dagster/row_count": state.live_records,
        "batch_ids": MetadataValue.json(live),
        "replaced_batch_ids": MetadataValue.json(replaced),
        DAY_COMPLETE: complete,
        "intraday_loads": len(state.loads),
        "load_records": result.record_count if result else 0,
        "aep_rows_per_unique_event": state.rows_per_unique_event(),
        WATERMARK: watermark,
    }
    if not complete:
        metadata["fresh_until"] = fresh_until(watermark)
    check = AssetCheckResult(
        check_name="batch_succeeded",  # aep.assets.BATCH_CHECK
        passed=result is None
        or (result.record_count == result.uploaded_records and not result.failed_record_count),
        metadata={
            "partition": context.partition_key,
            "batch_id": result.batch_id if result else "none: nothing new",
            "accepted_records": result.record_count if result else 0,
        },
    )
    return MaterializeResult(metadata=metadata, check_results=[check])
