"""The local platform's Batch Ingestion API and AEP's processing of a completed batch.

Design notes: docs/design-notes.md, `sandbox/platform_ingestion.py`.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from mixpanel_assets.sandbox.batch_validation import (
    ROW_CODE_ORDER,
    ROW_ERRORS,
    EarlyValidation,
    Tally,
    validate_batch,
    validated_early,
)
from mixpanel_assets.sandbox.platform_catalog import split_row_errors
from mixpanel_assets.sandbox.platform_http import (
    Request,
    Response,
    json_answer,
    json_body,
    problem,
)
from mixpanel_assets.sandbox.platform_state import (
    Batch,
    BatchFault,
    Outcome,
    new_batch_id,
    now_ms,
)
from mixpanel_assets.sandbox.record_checks import record_schema

logger = logging.getLogger(__name__)


class BatchIngestionAPI:
    """Batch Ingestion: batches, their files, COMPLETE and ABORT, and AEP's processing.

    Mixed into ``PlatformEmulator``, whose state, lock and storage it uses.
    """

    # Batch Ingestion -------------------------------------------------------------------------

    def _create_batch(self, request: Request, match: re.Match[str]) -> Response:
        body = json_body(request)
        input_format = body.get("inputFormat")
        if not isinstance(input_format, dict) or str(input_format.get("format")).lower() != "json":
            raise problem(
                400, 'inputFormat.format must be "json": the local platform reads JSON lines only.'
            )
        if input_format.get("isMultiLineJson"):
            raise problem(400, "isMultiLineJson is not supported: send one JSON object a line.")
        tags = body.get("tags", {})
        if not isinstance(tags, dict):
            raise problem(400, "tags must be an object of tag names to lists of values.")
        tags = copy.deepcopy(tags)
        diagnostics = body.get("enableErrorDiagnostics")
        if diagnostics is not None:
            if not isinstance(diagnostics, bool):
                raise problem(400, "enableErrorDiagnostics must be true or false.")
            tags["acp_enableErrorDiagnostics"] = [str(diagnostics).lower()]
        percent = body.get("partialIngestionPercent")
        if percent is not None:
            if (
                isinstance(percent, bool)
                or not isinstance(percent, int | float)
                or not 0 <= percent <= 100
            ):
                raise problem(400, "partialIngestionPercent must be a number from 0 to 100.")
            tags["acp_partialIngestionPercent"] = [f"{percent:g}"]
        external_id = body.get("externalId")
        if external_id is not None and not isinstance(external_id, str):
            raise problem(400, "externalId must be a string.")
        dataset_id = body.get("datasetId")
        with self._lock:
            if not isinstance(dataset_id, str) or dataset_id not in self._datasets:
                raise problem(400, f"datasetId {dataset_id!r} is not a dataset of this sandbox.")
            replay = self._checked_replay(body.get("replay"), dataset_id)
            now = now_ms()
            batch = Batch(
                id=new_batch_id(),
                dataset_id=dataset_id,
                status="loading",
                created=now,
                updated=now,
                input_format={**copy.deepcopy(input_format), "format": "json"},
                tags=tags,
                diagnostics=bool(diagnostics) or bool(percent),
                partial_percent=float(percent or 0),
                external_id=external_id,
                replay=replay,
            )
            self._batches[batch.id] = batch
            self._save()
            return json_answer(201, self._batch_view(batch))

    def _checked_replay(self, replay: Any, dataset_id: str) -> dict[str, Any] | None:
        """The ``replay`` to store, once each predecessor is a ``$``-prefixed batch id."""
        if replay is None:
            return None
        predecessors = replay.get("predecessors") if isinstance(replay, dict) else None
        if not isinstance(predecessors, list) or not predecessors:
            raise problem(400, 'replay.predecessors must list batch ids as "$<batchId>".')
        for reference in predecessors:
            if not isinstance(reference, str) or not reference.startswith("$"):
                raise problem(
                    400, f'replay predecessor {reference!r} must be a batch id prefixed with "$".'
                )
            predecessor = self._batches.get(reference[1:])
            if predecessor is None:
                raise problem(400, f"replay predecessor {reference[1:]!r} does not exist.")
            if predecessor.dataset_id != dataset_id:
                raise problem(
                    400,
                    f"replay predecessor {predecessor.id} belongs to dataset "
                    f"{predecessor.dataset_id}, not {dataset_id}.",
                )
        reason = replay.get("reason", "replace")
        if reason != "replace":
            raise problem(400, 'The local platform supports replay.reason "replace" only.')
        return {"predecessors": list(predecessors), "reason": reason}

    def _upload_file(self, request: Request, match: re.Match[str]) -> Response:
        batch_id, dataset_id = unquote(match["batch"]), unquote(match["dataset"])
        relative = _safe_relative_path(unquote(match["file"]))
        with self._lock:
            self._check_uploadable(batch_id, dataset_id)
        if request.headers.get_content_type() != "application/octet-stream":
            raise problem(415, "Upload files as Content-Type application/octet-stream.")
        too_large = problem(413, f"Files over {self.max_file_bytes} bytes need a large upload.")
        if request.body.length > self.max_file_bytes:
            raise too_large
        temp = self._temp_path()
        try:
            written = 0
            with temp.open("wb") as sink:
                for chunk in request.body.chunks():
                    written += len(chunk)
                    if written > self.max_file_bytes:
                        raise too_large
                    sink.write(chunk)
            with self._lock:
                self._check_uploadable(batch_id, dataset_id)
                target = self._uploads_dir / batch_id / relative
                replaced = target.exists()
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(temp, target)
                except (FileExistsError, NotADirectoryError, IsADirectoryError):
                    raise problem(
                        400, f"File path {relative.as_posix()!r} clashes with another file's path."
                    ) from None
                if validated_early(written, self._parallel_min_bytes):
                    self._validate_early(self._batches[batch_id], target)
        finally:
            temp.unlink(missing_ok=True)
        return Response(200 if replaced else 201)

    def _check_uploadable(self, batch_id: str, dataset_id: str) -> None:
        batch = self._batch_or_404(batch_id)
        if batch.dataset_id != dataset_id:
            raise problem(
                400, f"Batch {batch_id} belongs to dataset {batch.dataset_id}, not {dataset_id}."
            )
        if batch.status != "loading" or batch.complete_requested:
            state = "completed" if batch.status == "loading" else batch.status
            raise problem(
                400, f"Batch {batch_id} is {state}: files can only be added while it is loading."
            )

    def _batch_action(self, request: Request, match: re.Match[str]) -> Response:
        action = request.param("action")
        with self._lock:
            batch = self._batch_or_404(unquote(match["batch"]))
            if action == "COMPLETE":
                self._complete(batch)
            elif action == "ABORT":
                self._abort(batch)
            else:
                raise problem(
                    400, f"Unsupported action {action!r}: the local platform has COMPLETE, ABORT."
                )
            return json_answer(200, self._batch_view(batch))

    def _complete(self, batch: Batch) -> None:
        """Start processing once; a retried COMPLETE is answered 200 again, as AEP documents."""
        if batch.status in ("aborted", "abandoned"):
            raise problem(400, f"Batch {batch.id} was {batch.status} and cannot be completed.")
        if batch.status == "loading" and not batch.complete_requested:
            batch.complete_requested = True
            batch.updated = now_ms()
            self._save()
            self._start_processing(batch.id)

    def _abort(self, batch: Batch) -> None:
        if batch.status == "aborted":
            return
        if batch.status != "loading" or batch.complete_requested:
            state = "completed" if batch.status == "loading" else batch.status
            raise problem(400, f"Batch {batch.id} is {state} and can no longer be aborted.")
        if (early := self._early_validations().pop(batch.id, None)) is not None:
            early.close()
        batch.status = "aborted"
        batch.updated = now_ms()
        self._save()

    def _early_validations(self) -> dict[str, EarlyValidation]:
        """Loading batches' files validated as they arrive, by batch id (held with the lock)."""
        return self.__dict__.setdefault("_early", {})

    def _validate_early(self, batch: Batch, path: Path) -> None:
        """Start AEP's processing of one uploaded file now, by the dataset's schema as it is."""
        early = self._early_validations().get(batch.id)
        if early is None:
            schema = self._registry[self._datasets[batch.dataset_id].schema_id]
            early = EarlyValidation(
                self._temp_path(), batch.id, record_schema(self._resolved(schema))
            )
            self._early_validations()[batch.id] = early
        early.add(path)

    # Processing ------------------------------------------------------------------------------

    def _start_processing(self, batch_id: str) -> None:
        self._workers = [worker for worker in self._workers if worker.is_alive()]
        worker = threading.Thread(
            target=self._process, args=(batch_id,), name=f"aep-batch-{batch_id}", daemon=True
        )
        self._workers.append(worker)
        worker.start()

    def _process(self, batch_id: str) -> None:
        """AEP's asynchronous processing: wait, mark ``processing``, wait, validate and conclude.

        Stopping the emulator interrupts the waits; the next start resumes the batch.
        """
        if self._stopping.wait(self._processing_seconds / 2):
            return
        with self._lock:
            batch = self._batches[batch_id]
            batch.status = "processing"
            batch.started = batch.updated = now_ms()
            self._save()
        if self._stopping.wait(self._processing_seconds / 2):
            return
        with self._lock:
            fault = self._batch_faults.pop(0) if self._batch_faults else BatchFault()
        try:
            if fault.failure is not None:
                outcome = Outcome(
                    "failed", metrics={}, accepted=0, failed=0, errors=[fault.failure]
                )
            else:
                outcome = self._ingest(batch, fault.rejected_rows)
        except Exception as error:
            logger.exception("the platform emulator failed to process batch %s", batch_id)
            outcome = Outcome(
                status="failed",
                metrics={},
                accepted=0,
                failed=0,
                errors=[{"code": "INGEST-500", "description": f"Local platform fault: {error}"}],
            )
        with self._lock:
            self._conclude(batch, outcome)

    def _ingest(self, batch: Batch, rejected_rows: int) -> Outcome:
        """Validate every line of every uploaded file; publish the records only on success.

        The first ``rejected_rows`` valid rows are rejected anyway (a queued fault).

        Reads the batch's immutable fields without the lock: after COMPLETE nothing changes them.
        """
        upload_dir = self._uploads_dir / batch.id
        files = sorted(path for path in upload_dir.rglob("*") if path.is_file())
        with self._lock:  # the dataset's schema as the registry composes it now
            schema = self._registry[self._datasets[batch.dataset_id].schema_id]
            composed = record_schema(self._resolved(schema))
            early = self._early_validations().pop(batch.id, None)
        records_temp, failed_temp = self._temp_path(), self._temp_path()
        records_temp.mkdir()
        try:
            tally = validate_batch(
                files,
                records_temp,
                failed_temp,
                batch_id=batch.id,
                schema=composed,
                now=datetime.now(UTC),
                rejected_rows=rejected_rows,
                parallel_min_bytes=self._parallel_min_bytes,
                early=early,
            )
            status, errors = _verdict(batch, len(files), tally)
            accepted, failed = tally.accepted, sum(tally.failures.values())
            if failed:
                if batch.diagnostics:
                    split_row_errors(failed_temp, self._row_errors_dir(batch.id))
                self._diagnostics_path(batch.id).parent.mkdir(parents=True, exist_ok=True)
                os.replace(failed_temp, self._diagnostics_path(batch.id))
            if status == "success":
                records = self._records_path(batch)
                records.parent.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(records, ignore_errors=True)  # a crash came before the catalog
                os.replace(records_temp, records)
            return Outcome(
                status=status,
                metrics={
                    "inputByteSize": sum(path.stat().st_size for path in files),
                    "inputFileCount": len(files),
                    "inputRecordCount": accepted + failed,
                    "outputRecordCount": accepted if status == "success" else 0,
                    "failedRecordCount": failed,
                },
                accepted=accepted,
                failed=failed,
                errors=errors,
            )
        finally:
            if early is not None:
                early.close()
            shutil.rmtree(records_temp, ignore_errors=True)
            failed_temp.unlink(missing_ok=True)

    def _conclude(self, batch: Batch, outcome: Outcome) -> None:
        """Record the outcome; a successful replay retires its predecessors and their records."""
        now = now_ms()
        batch.status = outcome.status
        batch.updated = batch.completed = now
        batch.metrics = outcome.metrics or None
        batch.failed_record_count = outcome.failed
        batch.errors = outcome.errors or None
        if outcome.metrics:  # Catalog's recordCount: every record processed, failed ones too
            batch.record_count = outcome.accepted + outcome.failed
        retired: list[Batch] = []
        if outcome.status == "success" and batch.replay:
            for reference in batch.replay["predecessors"]:
                predecessor = self._batches[reference[1:]]
                predecessor.status = "inactive"
                predecessor.updated = now
                successors = predecessor.tags.setdefault("acp_successor", [])
                if batch.id not in successors:
                    successors.append(batch.id)
                retired.append(predecessor)
        self._save()
        for predecessor in retired:
            shutil.rmtree(self._records_path(predecessor), ignore_errors=True)


def _verdict(batch: Batch, file_count: int, tally: Tally) -> tuple[str, list[dict[str, Any]]]:
    """The batch's status and Catalog ``errors`` from its row counts and partial threshold."""
    accepted, failures = tally.accepted, tally.failures
    failed = sum(failures.values())
    if accepted + failed == 0:
        description = (
            "The batch has no files: upload at least one before COMPLETE."
            if file_count == 0
            else "The batch's files hold no records."
        )
        return "failed", [{"code": "106", "description": description}]
    if not failed:
        return "success", []
    within = failed * 100 <= batch.partial_percent * (accepted + failed)
    status = "success" if within else "failed"
    summary = f"Encountered {failed} errors in the data. "
    summary += f"Successfully ingested {accepted if within else 0} rows."
    if not within:
        summary += (
            f" The errors exceed the batch's partial ingestion threshold of "
            f"{batch.partial_percent:g}%, so the whole batch failed."
        )
    if not batch.diagnostics:
        summary += " Resend the data with error diagnostics enabled to learn the failure types."
        return status, [{"code": "INGEST-1211-400", "description": summary, "recordCount": failed}]
    summary += " Review the batch's failed rows for details."
    return status, [
        {"code": "INGEST-1212-400", "description": summary, "recordCount": failed},
        *(
            {"code": f"INGEST-{code}-400", "description": ROW_ERRORS[code], "recordCount": count}
            for code, count in sorted(
                failures.items(), key=lambda item: ROW_CODE_ORDER.index(item[0])
            )
        ),
    ]


def _safe_relative_path(file_path: str) -> Path:
    """The upload's path inside the batch; refuses anything that could escape it."""
    parts = file_path.split("/")
    if any(part in ("", ".", "..") or "\\" in part or "\x00" in part for part in parts):
        raise problem(400, f"File path {file_path!r} is not a relative path of plain names.")
    return Path(*parts)
