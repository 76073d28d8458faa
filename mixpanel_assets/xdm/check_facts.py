"""What the XDM checks judge a day by, gathered once while the mapping writes it.

Nothing here is the mapping's logic: each written record is judged by AEP's required-field
rules (walked for empty values when validated in full), the written ``_id``s go into a set of
their own (``seen_keys``) and the files' SHA-256 is
taken from the bytes written. The checks trust these facts only for the files they were taken
from (``events_sha256``, ``quarantine_sha256`` in the manifest); any other file is read and
judged again. Design notes: docs/design-notes.md, `xdm/line_mapping.py`.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import orjson
from isal import igzip

from mixpanel_assets.xdm.mapping import FUTURE_TOLERANCE_SECONDS
from mixpanel_assets.xdm.schema import empty_value_paths, is_rfc3339

EXAMPLES_SHOWN = 5
FACTS = "check_facts"  # the manifest's key
IDS_PER_LOOK_UP = 4096  # _ids looked up in the on-disk set together
_CLOCK_SKEW = timedelta(seconds=FUTURE_TOLERANCE_SECONDS)
_HASH_BLOCK = 1 << 20


def missing_required(record: Any, now: datetime, *, scan_empty: bool = True) -> str:
    """What AEP's required-field rules find missing in ``record`` ('' when nothing).

    ``scan_empty=False`` leaves out the walk for empty values (the mapping writes none, see
    ``map_event``; the records it validates in full are walked).
    """
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
    empty = empty_value_paths(record) if scan_empty else ()
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
        """The SHA-256 (hex) of the bytes written so far."""
        return self._hash.hexdigest()


def stream_sha256(stream: IO[bytes]) -> str:
    """The SHA-256 of what ``stream`` holds (a stored file, read as it is: no decompression)."""
    digest = hashlib.sha256()
    while block := stream.read(_HASH_BLOCK):
        digest.update(block)
    return digest.hexdigest()


def judged_now() -> datetime:
    """The instant (now, UTC) that records' timestamps are judged against."""
    return datetime.now(UTC)


def facts_summary(
    *,
    events_sha256: str,
    quarantine_sha256: str,
    records: int,
    problems: int,
    walked_for_empty_values: int,
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
        "records_walked_for_empty_values": walked_for_empty_values,
        "problem_examples": problem_examples,
        "ids_read": ids_read,
        "repeated_ids": repeated_ids,
        "repeated_examples": repeated_examples,
        "quarantine_lines": quarantine_lines,
    }


class FactsCollector:
    """The checks' facts of the day, a chunk at a time, in the written files' order.

    The written records' ``_id``s go into a set of their own, apart from the one the mapping
    drops repeats with: the check's judge of the files, not the mapping's word. Each ``_id``
    stands as the 32 bytes of its hex digits (``event_ids``), as exact as the ``_id`` itself.
    """

    def __init__(self, work_dir: Path) -> None:
        from mixpanel_assets.xdm.seen_keys import SeenKeys

        # A smaller filter than the mapping's set: 32 bits a key at 1M records, 6 at 5M.
        self._ids = SeenKeys(work_dir / "written-ids", tag_bytes=0, filter_bits=1 << 25)
        self.records = self.problems = self.ids_read = self.repeated = self.quarantine_lines = 0
        self.walked_for_empty_values = 0
        self.problem_examples: list[str] = []
        self.repeated_examples: list[str] = []

    def add(self, outcome: Any, kept: list[int], event_ids: list[bytes]) -> None:
        """The written records: ``outcome``'s at the indices ``kept``, with their ``event_ids``."""
        number = {index: self.records + position for position, index in enumerate(kept, 1)}
        self.walked_for_empty_values += sum(index in number for index in outcome.in_full)
        for index, missing in outcome.problems:
            if index in number:
                self.problems += 1
                if len(self.problem_examples) < EXAMPLES_SHOWN:
                    self.problem_examples.append(f"record {number[index]}: {missing}")
        firsts = self._ids.add_all(event_ids, [b""] * len(event_ids))
        for index, earlier in zip(kept, firsts, strict=True):
            if earlier is not None:
                self.repeated += 1
                if len(self.repeated_examples) < EXAMPLES_SHOWN:
                    identifier = orjson.loads(outcome.record(index))["_id"]
                    self.repeated_examples.append(
                        f"record {number[index]}: _id {identifier!r} came before"
                    )
        self.ids_read += len(event_ids)
        self.records += len(kept)

    def close(self) -> None:
        self._ids.close()


def duplicate_event_ids(
    events_path: Path, work_dir: Path, examples_shown: int
) -> tuple[int, int, list[str]]:
    """(records read, records whose ``_id`` came earlier, a few of them), streaming.

    A record without an ``_id`` is not counted here: required_xdm_fields reports it.
    """
    from mixpanel_assets.xdm.seen_keys import KEY_BYTES, SeenKeys

    seen = SeenKeys(work_dir / "check-ids", tag_bytes=0)
    records = duplicates = 0
    examples: list[str] = []
    # (record number, _id) of the records read since the last look-up, looked up together.
    pending: list[tuple[int, str]] = []

    def look_up() -> None:
        nonlocal duplicates
        # A 256-bit digest stands for the _id: equal _ids give equal digests, and two different
        # ones colliding is as unlikely as for the SHA-256 _ids themselves.
        digests = [
            hashlib.blake2b(identifier.encode(), digest_size=KEY_BYTES).digest()
            for _, identifier in pending
        ]
        for (number, identifier), first in zip(
            pending, seen.add_all(digests, [b""] * len(digests)), strict=True
        ):
            if first is not None:
                duplicates += 1
                if len(examples) < examples_shown:
                    examples.append(f"record {number}: _id {identifier!r} came before")
        pending.clear()

    try:
        with igzip.open(events_path, "rb") as lines:
            for records, line in enumerate(lines, start=1):
                document = orjson.loads(line)
                identifier = document.get("_id") if isinstance(document, dict) else None
                if isinstance(identifier, str):
                    pending.append((records, identifier))
                    if len(pending) >= IDS_PER_LOOK_UP:
                        look_up()
        look_up()
    finally:
        seen.close()
    return records, duplicates, examples
