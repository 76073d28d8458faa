"""What the local platform keeps (datasets, batches, registry, faults, log) as records.

What the local platform keeps: datasets, batches, registry resources, descriptors, namespaces,
queued faults and the request log, as plain records; batch ids and the clock.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


@dataclass(frozen=True)
class RequestLogEntry:
    """One answered request (``path`` without the query), so tests can assert on retries."""

    method: str
    path: str
    status: int
    accept: str = ""  # the request's Accept header


@dataclass
class Fault:
    """A queued fault: the next ``remaining`` matching requests are answered with ``status``."""

    method: str
    path_prefix: str
    status: int
    remaining: int
    retry_after: int | None
    after_handling: bool


@dataclass
class BatchFault:
    """What AEP's processing does to the next completed batch."""

    failure: dict[str, str] | None = None  # the batch fails with this error
    rejected_rows: int = 0  # this many otherwise valid rows are rejected


@dataclass
class Dataset:
    """A dataset as the catalog file stores it."""

    id: str
    name: str
    created: int
    updated: int
    schema_id: str = ""  # "" in catalogs written before datasets had schemas
    description: str = ""


@dataclass
class RegistryResource:
    """A tenant field group or schema: ``body`` as posted, plus what the registry assigns."""

    id: str
    kind: str  # "fieldgroups" or "schemas"
    body: dict[str, Any]
    created: int


@dataclass
class Descriptor:
    """A schema registry descriptor: ``body`` as posted, plus its id and creation time."""

    id: str
    body: dict[str, Any]
    created: int


@dataclass
class Namespace:
    """An identity namespace as the identity service stores it."""

    id: int
    code: str
    name: str
    description: str
    id_type: str
    created: int


@dataclass
class Batch:
    """A batch as the catalog file stores it; ``_batch_view`` renders the Catalog's JSON."""

    id: str
    dataset_id: str
    status: str
    created: int
    updated: int
    input_format: dict[str, Any]
    tags: dict[str, Any]
    diagnostics: bool
    partial_percent: float
    external_id: str | None = None
    replay: dict[str, Any] | None = None
    complete_requested: bool = False
    started: int | None = None
    completed: int | None = None
    record_count: int | None = None
    failed_record_count: int | None = None
    metrics: dict[str, int] | None = None
    errors: list[dict[str, Any]] | None = None


@dataclass
class Outcome:
    """How processing ended a batch: its status, metrics, accepted and failed counts, errors."""

    status: str
    metrics: dict[str, int]
    accepted: int
    failed: int
    errors: list[dict[str, Any]]


def new_batch_id() -> str:
    """A ULID, as AEP's batch ids are: 48 bits of milliseconds, 80 random, Crockford base32."""
    value = (now_ms() << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def now_ms() -> int:
    """The current time in epoch milliseconds, as the platform's timestamps are."""
    return int(time.time() * 1000)
