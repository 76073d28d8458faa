"""A loopback Adobe Experience Platform over real HTTP, assembled from one module per API.

IMS, Batch Ingestion, Catalog, Data Access diagnostics, the Schema Registry and Identity Service
namespaces. Design notes (batch statuses, error codes, faults for tests): docs/local-sandbox.md.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import uuid
from dataclasses import asdict
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mixpanel_assets.sandbox.batch_validation import (
    PARALLEL_MIN_BYTES,
    RECORD_SCHEMA,
    part_path,
    record_parts,
)
from mixpanel_assets.sandbox.platform_catalog import CatalogAPI
from mixpanel_assets.sandbox.platform_http import (
    ApiError,
    Request,
    Response,
    Route,
    Server,
    fault_error,
    problem,
)
from mixpanel_assets.sandbox.platform_identity import IdentityAPI
from mixpanel_assets.sandbox.platform_ingestion import BatchIngestionAPI
from mixpanel_assets.sandbox.platform_registry import SchemaRegistryAPI
from mixpanel_assets.sandbox.platform_state import (
    Batch,
    BatchFault,
    Dataset,
    Descriptor,
    Fault,
    Namespace,
    RegistryResource,
    RequestLogEntry,
    now_ms,
)

logger = logging.getLogger(__name__)

MAX_FILE_BYTES = 256 * 1024 * 1024  # AEP's small-file upload limit
# Statuses a finished batch may reach later in AEP, outside any request of ours.
_LATER_STATUSES = frozenset({"archived", "retained", "deleted", "inactive"})


class PlatformEmulator(IdentityAPI, BatchIngestionAPI, CatalogAPI, SchemaRegistryAPI):
    """AEP's platform APIs on a loopback port, state on disk.

    State lives under ``state_dir``: ``catalog.json`` (datasets, batches, Schema Registry
    resources, descriptors and namespaces, replaced atomically on every change),
    ``uploads/<batch>/<file>``, accepted records in Parquet parts
    ``datasets/<dataset>/<batch>/part-<n>.parquet`` (one per slice of the batch that a process
    validated) and failed rows in ``diagnostics/<batch>.jsonl``. A new emulator on the same
    directory sees everything but the old access tokens; run one emulator per directory at a
    time.

    A completed batch of at least ``parallel_min_bytes`` is validated by one worker process per
    usable CPU (tests lower it to take that path with little data); a smaller one in a thread
    of this process.
    """

    max_file_bytes: int = MAX_FILE_BYTES  # per-file upload limit; tests may lower it
    # False: the Catalog's batch list ignores its ``tags`` filter (a defect a client must survive).
    honours_tag_filter: bool = True
    # The most descriptors one ``-v2`` page holds, whatever ``limit`` asks (500 in AEP's docs).
    descriptor_page_limit: int = 500

    def __init__(
        self,
        state_dir: Path,
        *,
        client_id: str = "local-sandbox-client",
        client_secret: str = "local-sandbox-client-secret",
        org_id: str = "LOCALSANDBOX@AdobeOrg",
        sandbox_name: str = "prod",
        tenant_id: str = "localsandbox",
        token_lifetime_seconds: int = 86399,
        processing_seconds: float = 0.2,
        abandon_after_seconds: float = 86400.0,
        parallel_min_bytes: int = PARALLEL_MIN_BYTES,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._state_dir = Path(state_dir)
        self._client_id = client_id
        self._client_secret = client_secret
        self._org_id = org_id
        self._sandbox_name = sandbox_name
        self._tenant_id = tenant_id
        self._token_lifetime = token_lifetime_seconds
        self._processing_seconds = processing_seconds
        self._abandon_after_ms = int(abandon_after_seconds * 1000)
        self._parallel_min_bytes = parallel_min_bytes
        self._host = host
        self._port = port
        self._lock = threading.RLock()
        self._tokens: dict[str, float] = {}
        self._faults: list[Fault] = []
        self._batch_faults: list[BatchFault] = []
        self._request_log: list[RequestLogEntry] = []
        self._workers: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._server: Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._routes: list[tuple[str, re.Pattern[str], Route]] = [
            ("POST", re.compile(r"/ims/token/v3"), self._issue_token),
            ("POST", re.compile(r"/data/foundation/import/batches"), self._create_batch),
            (
                "PUT",
                re.compile(
                    r"/data/foundation/import/batches/(?P<batch>[^/]+)"
                    r"/datasets/(?P<dataset>[^/]+)/files/(?P<file>.+)"
                ),
                self._upload_file,
            ),
            (
                "POST",
                re.compile(r"/data/foundation/import/batches/(?P<batch>[^/]+)"),
                self._batch_action,
            ),
            ("GET", re.compile(r"/data/foundation/catalog/batches"), self._list_batches),
            (
                "GET",
                re.compile(r"/data/foundation/catalog/batches/(?P<batch>[^/]+)"),
                self._get_batch,
            ),
            ("GET", re.compile(r"/data/foundation/catalog/dataSets"), self._list_datasets),
            ("POST", re.compile(r"/data/foundation/catalog/dataSets"), self._create_dataset),
            (
                "GET",
                re.compile(r"/data/foundation/catalog/dataSets/(?P<dataset>[^/]+)"),
                self._get_dataset,
            ),
            (
                "GET",
                re.compile(r"/data/foundation/export/batches/(?P<batch>[^/]+)/failed"),
                self._failed_rows,
            ),
            (
                "GET",
                re.compile(r"/data/foundation/export/batches/(?P<batch>[^/]+)/meta"),
                self._batch_meta,
            ),
            ("GET", re.compile(r"/data/foundation/schemaregistry/stats"), self._registry_stats),
            (
                "GET",
                re.compile(r"/data/foundation/schemaregistry/tenant/(?P<kind>fieldgroups|schemas)"),
                self._list_resources,
            ),
            (
                "POST",
                re.compile(r"/data/foundation/schemaregistry/tenant/(?P<kind>fieldgroups|schemas)"),
                self._create_resource,
            ),
            (
                "GET",
                re.compile(
                    r"/data/foundation/schemaregistry/tenant/(?P<kind>fieldgroups|schemas)/(?P<id>.+)"
                ),
                self._get_resource,
            ),
            (
                "GET",
                re.compile(r"/data/foundation/schemaregistry/tenant/descriptors"),
                self._list_descriptors,
            ),
            (
                "POST",
                re.compile(r"/data/foundation/schemaregistry/tenant/descriptors"),
                self._create_descriptor,
            ),
            ("GET", re.compile(r"/data/core/idnamespace/identities"), self._list_namespaces),
            ("POST", re.compile(r"/data/core/idnamespace/identities"), self._create_namespace),
        ]
        self._datasets: dict[str, Dataset] = {}
        self._batches: dict[str, Batch] = {}
        self._registry: dict[str, RegistryResource] = {}
        self._descriptors: dict[str, Descriptor] = {}
        self._namespaces: dict[str, Namespace] = {}
        self._tmp_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self._tmp_dir.iterdir():  # half-written files of an earlier crash
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        self._load()

    # Lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        """Listen (on a free port when ``port`` is 0) and resume batches a crash interrupted."""
        if self._server is not None:
            raise RuntimeError("The platform emulator is already running.")
        self._stopping.clear()
        self._server = Server((self._host, self._port), self._handle)
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long shutdown() may wait
            name="aep-emulator",
            daemon=True,
        )
        self._serve_thread.start()
        with self._lock:
            for batch in self._batches.values():
                if batch.status == "processing" or (
                    batch.status == "loading" and batch.complete_requested
                ):
                    self._start_processing(batch.id)
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and wait for the processing threads."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._serve_thread is not None:
            self._serve_thread.join()
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL of both IMS (``/ims/token/v3``) and the platform (``/data/...``)."""
        if self._server is None:
            raise RuntimeError("The platform emulator is not running: call start() first.")
        return f"http://{self._host}:{self._server.server_address[1]}"

    # Python API for tests and the demo ---------------------------------------------------

    def create_dataset(self, name: str) -> str:
        """The id of the dataset called ``name``, created on first use on a built-in schema.

        The schema has the ExperienceEvent class, the mapping's field groups and the
        ``_<tenant>.mixpanel`` fields: a shortcut past the Schema Registry for tests of
        ingestion alone.
        """
        with self._lock:
            for dataset in self._datasets.values():
                if dataset.name == name:
                    return dataset.id
            dataset = self._new_dataset(name, self._built_in_schema_id(), "")
            self._save()
            return dataset.id

    def dataset_records(self, dataset_id: str) -> pd.DataFrame:
        """The records live in the dataset: those of ``success`` or ``retained`` batches."""
        with self._lock:
            if dataset_id not in self._datasets:
                raise KeyError(f"no dataset {dataset_id!r}")
            live = sorted(
                (
                    batch
                    for batch in self._batches.values()
                    if batch.dataset_id == dataset_id and batch.status in ("success", "retained")
                ),
                key=lambda batch: (batch.created, batch.id),
            )
            # Read under the lock: a concurrent replay deletes its predecessors' files.
            tables = [
                pq.read_table(part)
                for batch in live
                for part in record_parts(self._records_path(batch))
            ]
        return pa.concat_tables([RECORD_SCHEMA.empty_table(), *tables]).to_pandas()

    def batch(self, batch_id: str) -> dict[str, Any]:
        """The Catalog view of one batch (the value under its id in ``GET /catalog/batches/x``)."""
        with self._lock:
            if batch_id not in self._batches:
                raise KeyError(f"no batch {batch_id!r}")
            self._abandon_stale_batches()
            return self._batch_view(self._batches[batch_id])

    def batches(self, dataset_id: str) -> list[dict[str, Any]]:
        """The Catalog views of a dataset's batches, oldest first."""
        with self._lock:
            self._abandon_stale_batches()
            chosen = [batch for batch in self._batches.values() if batch.dataset_id == dataset_id]
            chosen.sort(key=lambda batch: (batch.created, batch.id))
            return [self._batch_view(batch) for batch in chosen]

    @property
    def request_log(self) -> list[RequestLogEntry]:
        """A snapshot of every answered request, oldest first."""
        with self._lock:
            return list(self._request_log)

    def queue_fault(
        self,
        method: str,
        path_prefix: str,
        status: int,
        count: int = 1,
        retry_after: int | None = None,
        after_handling: bool = False,
    ) -> None:
        """Answer the next ``count`` matching requests with ``status``, to exercise retries.

        With ``after_handling`` the request is carried out first and only its answer is lost, as
        when a connection breaks after AEP acted: a client must not assume nothing happened.
        """
        HTTPStatus(status)  # raises ValueError for a status HTTP does not define
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._faults.append(
                Fault(method.upper(), path_prefix, status, count, retry_after, after_handling)
            )

    def fail_next_batch(self, code: str, description: str) -> None:
        """AEP's processing fails the next completed batch with this error; no record lands."""
        with self._lock:
            self._batch_faults.append(
                BatchFault(failure={"code": code, "description": description})
            )

    def set_batch_status(self, batch_id: str, status: str) -> None:
        """Move a finished batch on as AEP's own lifecycle may (``archived``, ``retained``...).

        The Catalog shows the new status from now on.
        """
        if status not in _LATER_STATUSES:
            raise ValueError(f"status must be one of {sorted(_LATER_STATUSES)}")
        with self._lock:
            batch = self._batch_or_404(batch_id)
            batch.status = status
            batch.updated = now_ms()
            self._save()

    def reject_rows_of_next_batch(self, count: int) -> None:
        """Reject the first ``count`` valid rows of the next completed batch, as AEP may.

        The failed-row diagnostics show them; the batch's partial-ingestion threshold decides.
        """
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._batch_faults.append(BatchFault(rejected_rows=count))

    # Request handling ----------------------------------------------------------------------

    def _handle(self, request: Request) -> Response:
        """Answer one request; logged before the reply is sent so tests see it at once."""
        try:
            fault = self._take_fault(request)
            if fault is not None and not fault.after_handling:
                raise fault_error(fault)
            route, match = self._route(request)
            if request.path.startswith("/data/"):
                self._authorize(request.headers)
            response = route(request, match)
            if fault is not None:
                raise fault_error(fault)
        except ApiError as error:
            response = error.response
        except Exception:
            logger.exception("the platform emulator failed on %s %s", request.method, request.path)
            response = problem(500, "The local platform failed; see its log.").response
        with self._lock:
            self._request_log.append(
                RequestLogEntry(
                    request.method,
                    request.path,
                    response.status,
                    request.headers.get("Accept", ""),
                )
            )
        return response

    def _take_fault(self, request: Request) -> Fault | None:
        with self._lock:
            fault = next(
                (
                    fault
                    for fault in self._faults
                    if fault.method == request.method and request.path.startswith(fault.path_prefix)
                ),
                None,
            )
            if fault is not None:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
            return fault

    def _route(self, request: Request) -> tuple[Route, re.Match[str]]:
        path_known = False
        for method, pattern, route in self._routes:
            match = pattern.fullmatch(request.path)
            if match and method == request.method:
                return route, match
            path_known = path_known or match is not None
        if path_known:
            raise problem(405, f"{request.method} is not allowed on {request.path}.")
        raise problem(404, f"No API at {request.path} on the local platform.")

    # Storage ---------------------------------------------------------------------------------

    @property
    def _catalog_path(self) -> Path:
        return self._state_dir / "catalog.json"

    @property
    def _tmp_dir(self) -> Path:
        return self._state_dir / "tmp"

    @property
    def _uploads_dir(self) -> Path:
        return self._state_dir / "uploads"

    def _records_path(self, batch: Batch) -> Path:
        """The folder of the batch's Parquet parts (``record_parts`` lists them in order)."""
        return self._state_dir / "datasets" / batch.dataset_id / batch.id

    def _diagnostics_path(self, batch_id: str) -> Path:
        return self._state_dir / "diagnostics" / f"{batch_id}.jsonl"

    def _row_errors_dir(self, batch_id: str) -> Path:
        return self._state_dir / "diagnostics" / batch_id / "row_errors"

    def _temp_path(self) -> Path:
        return self._tmp_dir / uuid.uuid4().hex

    def _load(self) -> None:
        if not self._catalog_path.exists():
            return
        catalog = orjson.loads(self._catalog_path.read_bytes())
        self._datasets = {key: Dataset(**value) for key, value in catalog["datasets"].items()}
        self._batches = {key: Batch(**value) for key, value in catalog["batches"].items()}
        self._registry = {
            key: RegistryResource(**value) for key, value in catalog.get("registry", {}).items()
        }
        self._descriptors = {
            key: Descriptor(**value) for key, value in catalog.get("descriptors", {}).items()
        }
        self._namespaces = {
            key: Namespace(**value) for key, value in catalog.get("namespaces", {}).items()
        }
        for dataset in self._datasets.values():
            if not dataset.schema_id:  # written before datasets had schemas
                dataset.schema_id = self._built_in_schema_id()
        for batch in self._batches.values():  # one Parquet file, before records became parts
            single = self._records_path(batch).with_name(f"{batch.id}.parquet")
            if single.exists():
                self._records_path(batch).mkdir(exist_ok=True)
                os.replace(single, part_path(self._records_path(batch), 0))

    def _save(self) -> None:
        """Write the catalog to a temporary file and rename it over the old one (atomic)."""
        catalog = {
            "datasets": {key: asdict(value) for key, value in self._datasets.items()},
            "batches": {key: asdict(value) for key, value in self._batches.items()},
            "registry": {key: asdict(value) for key, value in self._registry.items()},
            "descriptors": {key: asdict(value) for key, value in self._descriptors.items()},
            "namespaces": {key: asdict(value) for key, value in self._namespaces.items()},
        }
        temp = self._temp_path()
        temp.write_bytes(orjson.dumps(catalog, option=orjson.OPT_INDENT_2))
        os.replace(temp, self._catalog_path)
