"""Load one day's XDM records into AEP as one batch that replaces the day's earlier batches.

The records are cut into JSON-lines files under the configured size, each uploaded while the
next is cut (at most two are on disk at once), and the batch completed and watched until AEP
has processed it. No batch is left ``loading``: any failure after the batch exists aborts it,
and a create whose answer was lost (AEP may have made the batch) aborts whatever that create
left behind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from isal import igzip

from mixpanel_assets.aep.client import SUCCEEDED, AEPClient
from mixpanel_assets.aep.errors import AEPError, AEPRefusal, BatchTimeoutError
from mixpanel_assets.progress import PROGRESS_SECONDS
from mixpanel_assets.readable import size_text

logger = logging.getLogger(__name__)

# AEP limits: 256 MB per small-file upload, 1500 files per batch.
MAX_SMALL_FILE_BYTES = 256 * 1024 * 1024
MAX_FILES_PER_BATCH = 1500
FAILED_ROWS_SHOWN = 5


@dataclass(frozen=True)
class DayBatchRequest:
    """Where and how to load one day: dataset, batch tags and predecessors, file size, limits."""

    dataset_id: str
    external_id: str
    tags: dict[str, list[str]]
    predecessors: list[str]
    max_file_bytes: int
    partial_ingestion_percent: float
    timeout_seconds: float
    poll_seconds: float


@dataclass
class DayBatchResult:
    """What became of the day's batch: its id, AEP's status and counts, errors and failed rows."""

    batch_id: str
    status: str
    uploaded_records: int
    files: int
    bytes: int
    record_count: int  # records AEP accepted into the dataset
    failed_record_count: int
    errors: list[dict[str, Any]] = field(default_factory=list)
    failed_rows: list[dict[str, Any]] = field(default_factory=list)  # AEP's diagnostics

    processed_count: int = 0  # AEP's recordCount: every record it processed, failed ones too

    @property
    def failed_percent(self) -> float:
        """The share (percent) of the processed records that AEP rejected."""
        processed = self.processed_count or self.record_count + self.failed_record_count
        return 100.0 * self.failed_record_count / processed if processed else 0.0


def load_day(
    client: AEPClient, records_path: Path, request: DayBatchRequest, work_dir: Path
) -> DayBatchResult:
    """Upload the day's gzip JSON-lines records as one batch, complete it and wait for AEP."""
    if not 0 < request.max_file_bytes <= MAX_SMALL_FILE_BYTES:
        raise ValueError(
            f"AEP_UPLOAD_FILE_MAX_BYTES={request.max_file_bytes} must be between 1 and "
            f"{MAX_SMALL_FILE_BYTES} (AEP's small-file limit)."
        )
    try:
        batch_id = client.create_batch(
            dataset_id=request.dataset_id,
            external_id=request.external_id,
            predecessors=request.predecessors,
            tags=request.tags,
            partial_ingestion_percent=request.partial_ingestion_percent,
        )
    except AEPRefusal:
        raise  # a refusal created nothing
    except AEPError:
        _abort_created_by(client, request.dataset_id, request.external_id)
        raise
    try:
        records = files = total_bytes = 0
        with ThreadPoolExecutor(1, thread_name_prefix="aep-upload") as uploader:
            uploading: Future[None] | None = None
            for part_path, part_records in _parts(records_path, work_dir, request.max_file_bytes):
                files += 1
                if files > MAX_FILES_PER_BATCH:
                    raise AEPError(
                        f"the day needs more than {MAX_FILES_PER_BATCH} files, AEP's limit per "
                        "batch: raise AEP_UPLOAD_FILE_MAX_BYTES (up to 256 MB)."
                    )
                total_bytes += part_path.stat().st_size
                if uploading is not None:
                    uploading.result()
                uploading = uploader.submit(_upload_part, client, batch_id, request, part_path)
                records += part_records
                logger.info(
                    "batch %s: uploading file %d (%d records, %s so far)",
                    batch_id,
                    files,
                    records,
                    size_text(total_bytes),
                )
            if uploading is not None:
                uploading.result()
        client.complete_batch(batch_id)
        logger.info(
            "batch %s: %d records in %d file(s) uploaded; AEP processes it",
            batch_id,
            records,
            files,
        )
        batch = client.wait_for_batch(
            batch_id,
            timeout_seconds=request.timeout_seconds,
            poll_seconds=request.poll_seconds,
            on_poll=_ProgressReport(batch_id),
        )
    except BatchTimeoutError:
        raise  # completed: AEP goes on processing it, and an abort would be refused
    except BaseException:
        _abort_quietly(client, batch_id)
        raise
    failed = _metric(batch, "failedRecordCount", "failedRecordCount")
    processed = _metric(batch, "recordCount", "inputRecordCount")
    accepted = (batch.get("metrics") or {}).get("outputRecordCount")
    if accepted is None:  # recordCount counts every processed record, the failed ones too
        accepted = max(0, processed - failed) if processed else 0
    return DayBatchResult(
        batch_id=batch_id,
        status=batch.get("status", "unknown"),
        uploaded_records=records,
        files=files,
        bytes=total_bytes,
        record_count=int(accepted) if batch.get("status") in SUCCEEDED else 0,
        failed_record_count=failed,
        processed_count=processed,
        errors=list(batch.get("errors") or []),
        failed_rows=_failed_rows(client, batch_id) if failed else [],
    )


def describe_failure(result: DayBatchResult) -> str:
    """AEP's verdict in words: the status, its error codes and the first failed rows."""
    details = "; ".join(
        f"{error.get('code', '?')}: {error.get('description') or error.get('message', '')}"
        for error in result.errors
    )
    text = (
        f"AEP batch {result.batch_id} ended {result.status!r}: {result.failed_record_count} of "
        f"{result.uploaded_records} records failed. {details or 'AEP gave no error details.'}"
    )
    if result.failed_rows:
        text += " First failed rows: " + " | ".join(map(describe_failed_row, result.failed_rows))
    return text


def describe_failed_row(row: dict[str, Any]) -> str:
    """One row of AEP's diagnostics: its error codes and where the record broke the schema.

    The record itself is left out: it may hold personal data, and its ``_id`` finds it.
    """
    codes = ",".join(str(error.get("code")) for error in row.get("_errors") or []) or "?"
    violations = "; ".join(
        f"{violation.get('pointerToViolation', '#')} {violation.get('message', '')}".strip()
        for violation in row.get("_validationErrors") or []
    )
    record_id = _record_id(row.get("_corrupt_record"))
    where = f" (_id {record_id})" if record_id else ""
    return f"{codes}{where}: {violations or row.get('_unparsed', 'no details')}"


def batch_failed(result: DayBatchResult) -> bool:
    """Whether AEP ended the batch in a status other than success."""
    return result.status not in SUCCEEDED


def _parts(records_path: Path, work_dir: Path, max_bytes: int) -> Iterator[tuple[Path, int]]:
    """JSON-lines files of at most ``max_bytes`` each, written one at a time."""
    index = 0
    part_path, part, size, count = None, None, 0, 0
    with igzip.open(records_path, "rb") as records:
        for line in records:
            if len(line) > max_bytes:
                raise AEPError(
                    f"one record is {len(line)} bytes, over AEP_UPLOAD_FILE_MAX_BYTES={max_bytes}."
                )
            if part is not None and size + len(line) > max_bytes:
                part.close()
                yield part_path, count
                part = None
            if part is None:
                part_path = work_dir / f"part-{index:05d}.json"
                part, size, count = part_path.open("wb"), 0, 0
                index += 1
            part.write(line)
            size += len(line)
            count += 1
    if part is not None:
        part.close()
        yield part_path, count


def _upload_part(
    client: AEPClient, batch_id: str, request: DayBatchRequest, part_path: Path
) -> None:
    client.upload_file(batch_id, request.dataset_id, part_path.name, part_path)
    part_path.unlink()


def _metric(batch: dict[str, Any], top_level: str, in_metrics: str) -> int:
    value = batch.get(top_level)
    if value is None:
        value = (batch.get("metrics") or {}).get(in_metrics, 0)
    return int(value or 0)


def _failed_rows(client: AEPClient, batch_id: str) -> list[dict[str, Any]]:
    """The first failed rows, best effort: diagnostics must not hide the verdict."""
    try:
        return client.failed_rows(batch_id, FAILED_ROWS_SHOWN)
    except AEPError as problem:
        logger.warning("could not read the failed rows of batch %s: %s", batch_id, problem)
        return []


def _record_id(text: Any) -> str | None:
    try:
        record = orjson.loads(text) if isinstance(text, str) else None
    except orjson.JSONDecodeError:
        return None
    value = record.get("_id") if isinstance(record, dict) else None
    return value if isinstance(value, str) else None


def _abort_created_by(client: AEPClient, dataset_id: str, external_id: str) -> None:
    """After a create whose answer was lost: abort the batch it may have made nonetheless."""
    try:
        for batch in client.list_batches(dataset_id, external_id=external_id):
            if batch.get("status") == "loading":
                _abort_quietly(client, batch["id"])
    except AEPError as problem:
        logger.warning(
            "could not check for a batch with externalId %s (the next run of the day aborts "
            "it): %s",
            external_id,
            problem,
        )


def _abort_quietly(client: AEPClient, batch_id: str) -> None:
    """Best effort: an abort that fails must not hide the error that caused it."""
    try:
        client.abort_batch(batch_id)
    except AEPError as problem:
        logger.warning(
            "could not abort batch %s (AEP will mark it abandoned): %s", batch_id, problem
        )


class _ProgressReport:
    """Logs a batch's status while AEP processes it: when it changes, else every 15 s."""

    def __init__(self, batch_id: str) -> None:
        self._batch_id = batch_id
        self._status: str | None = None
        self._said_at = time.monotonic()

    def __call__(self, batch: dict[str, Any], waited: float) -> None:
        status = str(batch.get("status"))
        now = time.monotonic()
        if status != self._status or now - self._said_at >= PROGRESS_SECONDS:
            logger.info(
                "batch %s: AEP status %r after %.0f s of processing", self._batch_id, status, waited
            )
            self._status, self._said_at = status, now
