"""The local platform's Catalog Service and the Data Access diagnostics of a batch.

Batches and datasets are filtered and paged as the Catalog documents; diagnostics are
``/failed`` and ``meta?path=row_errors``.
"""

from __future__ import annotations

import contextlib
import copy
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote

import orjson

from mixpanel_assets.sandbox.platform_http import (
    Request,
    Response,
    json_answer,
    json_body,
    problem,
    select_properties,
    whole_number,
)
from mixpanel_assets.sandbox.platform_registry import XED_CONTENT_TYPE
from mixpanel_assets.sandbox.platform_state import (
    Batch,
    Dataset,
    now_ms,
)

_ROW_ERROR_FILES = ("parsing_errors_0.json", "conversion_errors_0.json")


class CatalogAPI:
    """Catalog (batches and datasets) and Data Access diagnostics (failed rows, row errors).

    Mixed into ``PlatformEmulator``, whose state, lock and storage it uses.
    """

    # Catalog and diagnostics -----------------------------------------------------------------

    def _get_batch(self, request: Request, match: re.Match[str]) -> Response:
        with self._lock:
            batch = self._batch_or_404(unquote(match["batch"]))
            return json_answer(200, {batch.id: self._batch_view(batch)})

    def _list_batches(self, request: Request, match: re.Match[str]) -> Response:
        limit = whole_number(request.param("limit") or "20", "limit", 1, 100)
        start = whole_number(request.param("start") or "0", "start", 0, None)
        direction, _, order_field = (request.param("orderBy") or "asc:created").rpartition(":")
        if direction not in ("", "asc", "desc") or order_field not in ("created", "updated"):
            raise problem(400, "orderBy must be [asc:|desc:]created or [asc:|desc:]updated.")
        dataset_id = request.param("dataSet")
        external_id = request.param("externalId")
        statuses = {status for status in (request.param("status") or "").split(",") if status}
        tag_filters = _tag_filters(request.param("tags"))
        with self._lock:
            self._abandon_stale_batches()
            chosen = [
                batch
                for batch in self._batches.values()
                if (dataset_id is None or batch.dataset_id == dataset_id)
                and (external_id is None or batch.external_id == external_id)
                and (not statuses or batch.status in statuses)
                and (
                    not self.honours_tag_filter
                    or all(_has_tag(batch.tags, name, pattern) for name, pattern in tag_filters)
                )
            ]
            chosen.sort(
                key=lambda batch: (getattr(batch, order_field), batch.id),
                reverse=direction == "desc",
            )
            page = chosen[start : start + limit]
            return json_answer(200, {batch.id: self._batch_view(batch) for batch in page})

    def _list_datasets(self, request: Request, match: re.Match[str]) -> Response:
        limit = whole_number(request.param("limit") or "20", "limit", 1, 100)
        start = whole_number(request.param("start") or "0", "start", 0, None)
        name = request.param("name")
        matches_name = _name_condition(name) if name is not None else None
        with self._lock:
            chosen = [
                dataset
                for dataset in sorted(self._datasets.values(), key=lambda item: item.created)
                if matches_name is None or matches_name(dataset.name)
            ]
            page = chosen[start : start + limit]
            views = {dataset.id: self._dataset_view(dataset) for dataset in page}
        properties = request.param("properties")
        return json_answer(
            200, {key: select_properties(view, properties) for key, view in views.items()}
        )

    def _create_dataset(self, request: Request, match: re.Match[str]) -> Response:
        body = json_body(request)
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise problem(400, "name is required: a non-empty string.")
        schema_ref = body.get("schemaRef")
        if not isinstance(schema_ref, dict) or not isinstance(schema_ref.get("id"), str):
            raise problem(400, "schemaRef.id is required: the $id of the dataset's XDM schema.")
        if schema_ref.get("contentType") != XED_CONTENT_TYPE:
            raise problem(400, f"schemaRef.contentType must be {XED_CONTENT_TYPE}.")
        with self._lock:
            schema = self._registry.get(schema_ref["id"])
            if schema is None or schema.kind != "schemas":
                raise problem(400, f"schemaRef.id {schema_ref['id']!r} is not a tenant schema.")
            dataset = self._new_dataset(name, schema.id, str(body.get("description", "")))
            self._save()
        return json_answer(201, [f"@/dataSets/{dataset.id}"])

    def _get_dataset(self, request: Request, match: re.Match[str]) -> Response:
        dataset_id = unquote(match["dataset"])
        with self._lock:
            dataset = self._datasets.get(dataset_id)
            if dataset is None:
                raise problem(404, f"No dataset {dataset_id}.")
            view = self._dataset_view(dataset)
        return json_answer(200, {dataset.id: select_properties(view, request.param("properties"))})

    def _dataset_view(self, dataset: Dataset) -> dict[str, Any]:
        return {
            "name": dataset.name,
            "description": dataset.description,
            "imsOrg": self._org_id,
            "created": dataset.created,
            "updated": dataset.updated,
            "schemaRef": {"id": dataset.schema_id, "contentType": XED_CONTENT_TYPE},
            "tags": {},
            "version": "1.0.0",
        }

    def _new_dataset(self, name: str, schema_id: str, description: str) -> Dataset:
        now = now_ms()
        dataset = Dataset(
            id=secrets.token_hex(12),
            name=name,
            created=now,
            updated=now,
            schema_id=schema_id,
            description=description,
        )
        self._datasets[dataset.id] = dataset
        return dataset

    def _failed_rows(self, request: Request, match: re.Match[str]) -> Response:
        """Without ``path``, the failed batch's failed-row files; with it, that file's rows.

        A batch that went live despite failed rows (partial ingestion) lists none here: its rows
        are in the ``row_errors`` meta files.
        """
        with self._lock:
            batch = self._batch_or_404(unquote(match["batch"]))
            live = batch.status != "failed"
        path = self._diagnostics_path(batch.id)
        name = request.param("path")
        if name is None:
            size = path.stat().st_size if path.exists() and not live else 0
            listing = [{"name": "_SUCCESS", "length": "0"}]
            if size:
                listing.append({"name": path.name, "length": str(size)})
            for entry in listing:
                link = f"{self.url}{request.path}?path={entry['name']}"
                entry["_links"] = {"self": {"href": link}}
            return json_answer(
                200, {"data": listing, "_page": {"limit": 100, "count": len(listing)}}
            )
        if name == "_SUCCESS":
            return Response(200, content_type="application/octet-stream")
        if name != path.name or not path.exists() or live:
            raise problem(404, f"Batch {batch.id} has no failed-row file {name!r}.")
        return Response(200, content_type="application/x-ndjson", file=path)

    def _batch_meta(self, request: Request, match: re.Match[str]) -> Response:
        """``path=row_errors`` lists the batch's row-error files; ``row_errors/<name>`` reads one
        (kept when the batch had error diagnostics: AEP's partial-ingestion diagnostics)."""
        with self._lock:
            batch = self._batch_or_404(unquote(match["batch"]))
        folder = self._row_errors_dir(batch.id)
        name = request.param("path")
        if name is None:
            raise problem(400, "path is required, e.g. path=row_errors or path=input_files.")
        if name.rstrip("/") == "row_errors":
            files = sorted(folder.iterdir()) if folder.exists() else []
            listing = [
                {
                    "name": file.name,
                    "length": str(file.stat().st_size),
                    "_links": {
                        "self": {"href": f"{self.url}{request.path}?path=row_errors%2F{file.name}"}
                    },
                }
                for file in files
            ]
            return json_answer(
                200, {"data": listing, "_page": {"limit": 100, "count": len(listing)}}
            )
        folder_name, _, file_name = name.partition("/")
        file = folder / file_name
        if folder_name != "row_errors" or file_name not in _ROW_ERROR_FILES or not file.exists():
            raise problem(404, f"Batch {batch.id} has no meta file {name!r}.")
        return Response(200, content_type="application/json", file=file)

    def _batch_view(self, batch: Batch) -> dict[str, Any]:
        view: dict[str, Any] = {
            "id": batch.id,
            "imsOrg": self._org_id,
            "status": batch.status,
            "created": batch.created,
            "updated": batch.updated,
            "createdClient": self._client_id,
            "version": "1.0.0",
            "tags": copy.deepcopy(batch.tags),
            "relatedObjects": [{"type": "dataSet", "id": batch.dataset_id}],
            "inputFormat": copy.deepcopy(batch.input_format),
        }
        optional = {
            "externalId": batch.external_id,
            "replay": batch.replay,
            "started": batch.started,
            "completed": batch.completed,
            "recordCount": batch.record_count,
            "failedRecordCount": batch.failed_record_count,
            "metrics": batch.metrics,
            "errors": batch.errors,
        }
        view.update(
            {key: copy.deepcopy(value) for key, value in optional.items() if value is not None}
        )
        return view

    def _batch_or_404(self, batch_id: str) -> Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise problem(404, f"No batch {batch_id}.")
        self._abandon_stale_batches()
        return batch

    def _abandon_stale_batches(self) -> None:
        """``loading`` batches nobody completed in time are ``abandoned``, as AEP does."""
        now = now_ms()
        stale = [
            batch
            for batch in self._batches.values()
            if batch.status == "loading"
            and not batch.complete_requested
            and now - batch.updated >= self._abandon_after_ms
        ]
        for batch in stale:
            batch.status = "abandoned"
            batch.updated = now
            batch.errors = [
                {
                    "code": "INGEST-ABANDONED",
                    "description": "The batch was not completed in the expected timeframe.",
                }
            ]
        if stale:
            self._save()


def split_row_errors(failed_rows: Path, folder: Path) -> None:
    """A batch's failed rows as AEP's row-error files, each row with its codes.

    Rows that are not JSON objects (1401) go under parsing errors, the others under conversion
    errors.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as files, failed_rows.open("rb") as rows:
        outputs: dict[str, BinaryIO] = {}
        for line in rows:
            code = orjson.loads(line)["_errors"][0]["code"]
            name = _ROW_ERROR_FILES[0] if code == "1401" else _ROW_ERROR_FILES[1]
            if name not in outputs:
                outputs[name] = files.enter_context((folder / name).open("wb"))
            outputs[name].write(line)


def _tag_filters(text: str | None) -> list[tuple[str, re.Pattern[str]]]:
    """Catalog's ``tags=name:value,name2:value2`` (all must match; ``*`` in a value is a
    wildcard) as (tag name, value pattern) pairs."""
    filters = []
    for condition in (text or "").split(","):
        if not condition:
            continue
        name, separator, value = condition.partition(":")
        if not separator or not name:
            raise problem(400, f"tags condition {condition!r} must be <name>:<value>.")
        pattern = ".*".join(re.escape(part) for part in value.split("*"))
        filters.append((name, re.compile(pattern)))
    return filters


def _has_tag(tags: dict[str, Any], name: str, pattern: re.Pattern[str]) -> bool:
    values = tags.get(name)
    if not isinstance(values, list):
        values = [] if values is None else [values]
    return any(pattern.fullmatch(str(value)) for value in values)


def _name_condition(text: str) -> Callable[[str], bool]:
    """Catalog's property filter on ``name``: a leading ``!`` negates, ``,`` separates
    alternatives (any may match), ``*`` is a wildcard and ``**`` a literal asterisk."""
    negated = text.startswith("!")
    patterns = [_name_pattern(value) for value in text.removeprefix("!").split(",")]
    return lambda name: any(pattern.fullmatch(name) for pattern in patterns) != negated


def _name_pattern(name: str) -> re.Pattern[str]:
    """One ``name`` value: ``*`` is a wildcard and ``**`` a literal asterisk."""
    parts = [".*".join(re.escape(piece) for piece in part.split("*")) for part in name.split("**")]
    return re.compile(re.escape("*").join(parts))
