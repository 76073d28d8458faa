"""What the XDM checks judge a day by, gathered once while the mapping writes it.

The checks must stay independent judges of the files, so nothing here is the mapping's logic:
``missing_required`` judges each written record as AEP's required-field rules do, the ``_id``s
of the written records go into a set of their own (``seen_keys``), and the files' SHA-256 is
taken from the very bytes written. The checks trust these facts only for the files they were
taken from (``events_sha256``, ``quarantine_sha256`` in the manifest); any other file is read
and judged again.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from mixpanel_assets.xdm.mapping import FUTURE_TOLERANCE_SECONDS
from mixpanel_assets.xdm.schema import empty_value_paths, is_rfc3339

EXAMPLES_SHOWN = 5
FACTS = "check_facts"  # the manifest's key
_CLOCK_SKEW = timedelta(seconds=FUTURE_TOLERANCE_SECONDS)
_HASH_BLOCK = 1 << 20


def missing_required(record: Any, now: datetime) -> str:
    """What AEP's required-field rules find missing in ``record`` ('' when nothing)."""
    if not isinstance(record, dict):
        return "a JSON object"
    missing = [name for name in ("_id", "timestamp") if not record.get(name)]
    timestamp = record.get("timestamp")
    if timestamp and not (isinstance(timestamp, str) and is_rfc3339(timestamp)):
        missing.append(f"an RFC 3339 timestamp (found {timestamp!r})")
    elif timestamp and datetime.fromisoformat(timestamp.replace("z", "Z")) > now + _CLOCK_SKEW:
        missing.append(f"a timestamp in the past (found {timestamp})")
    identities = record.get("identityMap") or {}
    primaries = 0
    for items in identities.values():
        for item in items:
            if item.get("primary") is True:
                primaries += 1
    if primaries != 1:
        missing.append(f"exactly one primary identity (found {primaries})")
    empty = empty_value_paths(record)
    if empty:
        missing.append(f"non-empty values at {', '.join(empty)}")
    return ", ".join(missing)


class HashingFile:
    """A file opened for writing that takes the SHA-256 of every byte written to it."""

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self.mode = "wb"
        self._file = open(path, "wb")  # noqa: SIM115 (closed by close())
        self._hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def sha256(self) -> str:
        return self._hash.hexdigest()


def stream_sha256(stream: IO[bytes]) -> str:
    """The SHA-256 of what ``stream`` holds (a stored file, read as it is: no decompression)."""
    digest = hashlib.sha256()
    while block := stream.read(_HASH_BLOCK):
        digest.update(block)
    return digest.hexdigest()


def judged_now() -> datetime:
    return datetime.now(UTC)


def facts_summary(
    *,
    events_sha256: str,
    quarantine_sha256: str,
    records: int,
    problems: int,
    problem_examples: list[str],
    repeated_ids: int,
    repeated_examples: list[str],
    ids_read: int,
    quarantine_lines: int,
) -> dict[str, Any]:
    """The manifest's ``check_facts``: each check's figures, and the files they are about."""
    return {
        "events_sha256": events_sha256,
        "quarantine_sha256": quarantine_sha256,
        "records": records,
        "records_with_problems": problems,
        "problem_examples": problem_examples,
        "ids_read": ids_read,
        "repeated_ids": repeated_ids,
        "repeated_examples": repeated_examples,
        "quarantine_lines": quarantine_lines,
    }
