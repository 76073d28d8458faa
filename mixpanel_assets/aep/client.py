"""The AEP calls the pipeline makes, one method each: batches, datasets, schemas, identities.

Knows nothing of Dagster; ``transport.py`` sends each call (design notes: docs/aep-api.md).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from mixpanel_assets.aep.errors import BatchTimeoutError
from mixpanel_assets.aep.transport import PlatformTransport, segment

# Batch statuses (docs/aep-api.md says where each comes from and why it is in its group).
# ``retained`` is a finished batch whose records AEP keeps: counted live, so that a re-run
# replaces it rather than holding the day twice.
SUCCEEDED = frozenset({"success", "active", "retained"})
FAILED = frozenset({"failed", "failure", "aborted", "abandoned"})
# Out of the live dataset: reverted or expired, deleted, or moved to cold storage.
REPLACED = frozenset({"inactive", "deleted", "archived"})
STALLED = "stalled"  # retries exhausted inside AEP: neither done nor failed
TERMINAL = SUCCEEDED | FAILED | REPLACED | {STALLED}
# Schema Registry media types: a resource as stored, fully resolved, and list summaries.
XED = "application/vnd.adobe.xed+json;version=1"
XED_FULL = "application/vnd.adobe.xed-full+json;version=1"
XED_ID = "application/vnd.adobe.xed-id+json"
# Descriptors as objects in pages (``results``, ``_page``); plain xdm+json is one unpaged map.
XDM_DESCRIPTORS_V2 = "application/vnd.adobe.xdm-v2+json"
DESCRIPTOR_PAGE = 500  # the Schema Registry's largest ``limit``
CATALOG_PAGE = 100  # the Catalog's largest page
# Catalog polls while a batch processes: pauses of this share of the time waited, up to a cap.
_POLL_SHARE = 0.1
_MAX_POLL_SECONDS = 30.0


class AEPClient(PlatformTransport):
    """The AEP APIs the pipeline uses, one method per call."""

    # Batch Ingestion API -------------------------------------------------------------------

    def create_batch(
        self,
        *,
        dataset_id: str,
        external_id: str,
        predecessors: list[str],
        tags: Mapping[str, list[str]],
        partial_ingestion_percent: float,
    ) -> str:
        """Create a batch (replacing ``predecessors`` when given); its id."""
        body: dict[str, Any] = {
            "datasetId": dataset_id,
            "inputFormat": {"format": "json", "isMultiLineJson": False},
            "externalId": external_id,
            "tags": dict(tags),
            "enableErrorDiagnostics": True,
        }
        if partial_ingestion_percent > 0:
            body["partialIngestionPercent"] = partial_ingestion_percent
        if predecessors:
            body["replay"] = {
                "predecessors": [f"${batch_id}" for batch_id in predecessors],
                "reason": "replace",
            }
        response = self._call(
            "POST",
            "/data/foundation/import/batches",
            json=body,
            creates=True,
            what=f"create a batch in dataset {dataset_id}",
        )
        return response.json()["id"]

    def upload_file(self, batch_id: str, dataset_id: str, name: str, path: Path) -> None:
        """PUT one file into the batch; idempotent, so every failure may be retried."""
        url = (
            f"/data/foundation/import/batches/{segment(batch_id)}/datasets/{segment(dataset_id)}"
            f"/files/{quote(name, safe='/')}"
        )
        self._call(
            "PUT",
            url,
            body_path=path,
            headers={"Content-Type": "application/octet-stream"},
            what=f"upload {name} into batch {batch_id}",
        )

    def complete_batch(self, batch_id: str) -> None:
        """Signal the upload is done; AEP documents retrying COMPLETE as safe."""
        self._call(
            "POST",
            f"/data/foundation/import/batches/{segment(batch_id)}",
            params={"action": "COMPLETE"},
            what=f"complete batch {batch_id}",
        )

    def abort_batch(self, batch_id: str) -> None:
        """Abort a batch still loading."""
        self._call(
            "POST",
            f"/data/foundation/import/batches/{segment(batch_id)}",
            params={"action": "ABORT"},
            what=f"abort batch {batch_id}",
        )

    # Catalog -------------------------------------------------------------------------------

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        """The Catalog's view of one batch, with its ``id``."""
        response = self._call(
            "GET",
            f"/data/foundation/catalog/batches/{segment(batch_id)}",
            what=f"read batch {batch_id}",
        )
        body = response.json()
        return {"id": batch_id, **body.get(batch_id, next(iter(body.values()), {}))}

    def list_batches(
        self,
        dataset_id: str,
        *,
        tags: Mapping[str, str] | None = None,
        external_id: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The dataset's batches with all these tags or this ``externalId``, newest first.

        ``tags`` are ``name: value``; the Catalog is read a page at a time.
        """
        params = {"dataSet": dataset_id, "orderBy": "desc:created", "limit": str(CATALOG_PAGE)}
        if tags:
            params["tags"] = ",".join(f"{name}:{value}" for name, value in tags.items())
        if external_id:
            params["externalId"] = external_id
        seen: set[str] = set()
        start = 0
        while True:
            page = self._call(
                "GET",
                "/data/foundation/catalog/batches",
                params={**params, "start": str(start)},
                what=f"list the batches of dataset {dataset_id}",
            ).json()
            fresh = {key: view for key, view in page.items() if key not in seen}
            for batch_id, view in fresh.items():
                seen.add(batch_id)
                yield {"id": batch_id, **view}
            if len(page) < CATALOG_PAGE or not fresh:
                return
            start += CATALOG_PAGE

    def wait_for_batch(
        self,
        batch_id: str,
        *,
        timeout_seconds: float,
        poll_seconds: float,
        on_poll: Callable[[dict[str, Any], float], None] | None = None,
    ) -> dict[str, Any]:
        """Poll the Catalog until the batch reaches a terminal status.

        The pause between polls is a tenth of the time waited so far (at least
        ``poll_seconds``, at most 30 s): the end of processing is noticed at most about 10%
        late, and an hours-long batch costs the Catalog one poll every 30 s. ``on_poll`` gets
        each unfinished answer and the seconds waited so far.
        """
        started = time.monotonic()
        deadline = started + timeout_seconds
        while True:
            batch = self.get_batch(batch_id)
            if batch.get("status") in TERMINAL:
                return batch
            waited = time.monotonic() - started
            if on_poll is not None:
                on_poll(batch, waited)
            interval = min(_MAX_POLL_SECONDS, max(poll_seconds, _POLL_SHARE * waited))
            if time.monotonic() + interval > deadline:
                raise BatchTimeoutError(
                    f"batch {batch_id} was still {batch.get('status')!r} after "
                    f"{timeout_seconds:.0f} s. It is not cancelled: AEP goes on processing it "
                    "and it may still go live. The next run of the day waits for it and "
                    "replaces it if it did, so re-running the day loses and doubles nothing; "
                    "its progress shows in the AEP UI (Datasets > batch)."
                )
            time.sleep(interval)

    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        """The Catalog's view of one dataset (name, schema, tags), with its ``id``."""
        response = self._call(
            "GET",
            f"/data/foundation/catalog/dataSets/{segment(dataset_id)}",
            params={"properties": "name,schemaRef,tags"},
            what=f"read dataset {dataset_id}",
        )
        body = response.json()
        return {"id": dataset_id, **body.get(dataset_id, next(iter(body.values()), {}))}

    def find_datasets(self, name: str) -> list[dict[str, Any]]:
        """The datasets called exactly ``name``, read a Catalog page at a time."""
        params = {
            "name": _name_filter(name),
            "properties": "name,schemaRef",
            "limit": str(CATALOG_PAGE),
        }
        found: list[dict[str, Any]] = []
        seen: set[str] = set()
        start = 0
        while True:
            page = self._call(
                "GET",
                "/data/foundation/catalog/dataSets",
                params={**params, "start": str(start)},
                what=f"look for dataset {name!r}",
            ).json()
            fresh = {key: view for key, view in page.items() if key not in seen}
            seen.update(fresh)
            found += [
                {"id": dataset_id, **view}
                for dataset_id, view in fresh.items()
                if view.get("name") == name
            ]
            if len(page) < CATALOG_PAGE or not fresh:
                return found
            start += CATALOG_PAGE

    def create_dataset(self, name: str, schema_id: str, description: str) -> str:
        """Create a dataset on the schema ``schema_id``; its id."""
        response = self._call(
            "POST",
            "/data/foundation/catalog/dataSets",
            json={
                "name": name,
                "description": description,
                "schemaRef": {"id": schema_id, "contentType": XED},
            },
            creates=True,
            what=f"create dataset {name!r}",
        )
        (reference,) = response.json()  # ["@/dataSets/<id>"]
        return reference.rsplit("/", 1)[-1]

    # Data Access: diagnostics ----------------------------------------------------------------

    def failed_rows(self, batch_id: str, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` of the rows AEP rejected, with their error codes (kept 30 days).

        A failed batch's rows are under ``/failed``; those a partially successful batch left out
        are in its ``row_errors`` meta files, read when ``/failed`` has none.
        """
        rows = self._diagnostic_rows(batch_id, "failed", None, limit)
        if not rows:
            rows = self._diagnostic_rows(batch_id, "meta", "row_errors", limit)
        return rows

    def _diagnostic_rows(
        self, batch_id: str, endpoint: str, folder: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Rows of the Data Access files listed at ``endpoint`` (``?path=folder`` when given)."""
        path = f"/data/foundation/export/batches/{segment(batch_id)}/{endpoint}"
        what = f"list the {folder or endpoint} files of batch {batch_id}"
        listing = self._call(
            "GET", path, params={"path": folder} if folder else None, what=what
        ).json()
        rows: list[dict[str, Any]] = []
        for file in listing.get("data") or []:
            if str(file.get("length", "0")) == "0":
                continue
            name = f"{folder}/{file['name']}" if folder else file["name"]
            response = self._call(
                "GET",
                path,
                params={"path": name},
                stream=True,
                what=f"read the failed rows of batch {batch_id}",
            )
            with response:
                for line in response.iter_lines():
                    if line.strip():
                        rows.append(_json_or_text(line))
                    if len(rows) >= limit:
                        return rows
        return rows

    # Schema Registry -----------------------------------------------------------------------

    def registry_stats(self) -> dict[str, Any]:
        """The organisation's Schema Registry summary; ``tenantId`` is its tenant namespace."""
        return self._call(
            "GET", "/data/foundation/schemaregistry/stats", what="read the Schema Registry stats"
        ).json()

    def find_tenant_resources(self, kind: str, title: str) -> list[dict[str, Any]]:
        """The tenant ``fieldgroups`` or ``schemas`` titled exactly ``title`` (summaries)."""
        response = self._call(
            "GET",
            f"/data/foundation/schemaregistry/tenant/{kind}",
            params={"property": f"title=={title}"},
            headers={"Accept": XED_ID},
            what=f"look for the {kind} titled {title!r}",
        )
        return [item for item in response.json().get("results", []) if item.get("title") == title]

    def create_tenant_resource(self, kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a tenant ``fieldgroups`` or ``schemas`` resource; AEP's answer."""
        response = self._call(
            "POST",
            f"/data/foundation/schemaregistry/tenant/{kind}",
            json=dict(body),
            creates=True,
            what=f"create the {kind} resource {body.get('title')!r}",
        )
        return response.json()

    def get_schema(self, schema_id: str, accept: str = XED_FULL) -> dict[str, Any]:
        """A tenant schema by ``$id``; by default fully resolved, in AEP notation."""
        response = self._call(
            "GET",
            f"/data/foundation/schemaregistry/tenant/schemas/{segment(schema_id)}",
            headers={"Accept": accept},
            what=f"read schema {schema_id}",
        )
        return response.json()

    def schema_descriptors(self, schema_id: str) -> list[dict[str, Any]]:
        """The descriptors defined on one schema, read a page at a time (the ``-v2`` listing)."""
        params = {"property": f"xdm:sourceSchema=={schema_id}", "limit": str(DESCRIPTOR_PAGE)}
        found: list[dict[str, Any]] = []
        seen: set[Any] = set()
        while True:
            page = self._call(
                "GET",
                "/data/foundation/schemaregistry/tenant/descriptors",
                params=params,
                headers={"Accept": XDM_DESCRIPTORS_V2},
                what="list the Schema Registry descriptors",
            ).json()
            results = page.get("results") or []
            for descriptor in results:
                if not isinstance(descriptor, dict) or descriptor.get("@id") in seen:
                    continue
                seen.add(descriptor.get("@id"))
                if descriptor.get("xdm:sourceSchema") == schema_id:
                    found.append(descriptor)
            following = (page.get("_page") or {}).get("next")
            if not results or following in (None, "", params.get("start")):
                return found
            params = {**params, "start": str(following)}

    def create_descriptor(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a Schema Registry descriptor; AEP's answer."""
        response = self._call(
            "POST",
            "/data/foundation/schemaregistry/tenant/descriptors",
            json=dict(body),
            creates=True,
            what=f"create a {body.get('@type')} descriptor",
        )
        return response.json()

    # Identity Service ----------------------------------------------------------------------

    def identity_namespaces(self) -> list[dict[str, Any]]:
        """The organisation's identity namespaces."""
        return self._call(
            "GET", "/data/core/idnamespace/identities", what="list the identity namespaces"
        ).json()

    def create_identity_namespace(self, *, code: str, name: str, description: str) -> None:
        """Create a cross-device identity namespace."""
        self._call(
            "POST",
            "/data/core/idnamespace/identities",
            json={"code": code, "name": name, "description": description, "idType": "CROSS_DEVICE"},
            creates=True,
            what=f"create identity namespace {code}",
        )


def _name_filter(name: str) -> str:
    """A Catalog ``name`` filter that matches ``name`` and perhaps a few more (the caller keeps
    the exact matches): in the filter ``,`` separates alternatives, a leading ``!`` negates and
    ``*`` is a wildcard, so each run of those characters becomes one ``*``."""
    return re.sub(r"[,*]+", "*", "*" + name[1:] if name.startswith("!") else name)


def _json_or_text(line: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return {"_unparsed": line[:500].decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"_unparsed": str(value)[:500]}
