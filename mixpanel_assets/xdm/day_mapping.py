"""One day of raw export lines -> XDM records, duplicates dropped, the rest quarantined.

Design notes: docs/design-notes.md, `xdm/day_mapping.py`.
"""

from __future__ import annotations

import base64
import gc
import math
import multiprocessing
import multiprocessing.connection
import os
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson
from isal import igzip

from mixpanel_assets.xdm.check_facts import FactsCollector, HashingFile, facts_summary
from mixpanel_assets.xdm.line_mapping import ChunkOutcome, map_chunk
from mixpanel_assets.xdm.mapping import DEDUP_KEY_BYTES, MappingSpec

if TYPE_CHECKING:
    from mixpanel_assets.xdm.seen_keys import SeenKeys

_COMPRESS_LEVEL = 1
_LINE_NUMBER_BYTES = 8
KEY_TAG_BYTES = DEDUP_KEY_BYTES + _LINE_NUMBER_BYTES  # what the day's set of keys tags each with
_EVENT_ID_BYTES = 32  # SHA-256
# Decompressed bytes of raw lines per chunk a worker maps (about a thousand events).
_CHUNK_BYTES = 1 << 20
# Chunks handed out per worker and not yet placed: enough to keep them busy, few for memory.
_CHUNKS_IN_FLIGHT_PER_WORKER = 3
# Below this raw file size, starting workers (about a second) costs more than they save.
PARALLEL_MIN_RAW_BYTES = 16 << 20
# Allocations between young-object collections in a mapping worker (Python's default is 700).
_WORKER_GC_THRESHOLD = 50_000


@dataclass
class DayMappingStats:
    """What mapping the day did: counts, quarantine reasons, event types, lags, check facts."""

    raw_lines: int = 0
    records: int = 0
    duplicates_dropped: int = 0
    quarantined: int = 0
    # Mapped records validated in full (the proof's sample, or all when it does not hold).
    records_validated_in_full: int = 0
    quarantine_reasons: Counter[str] = field(default_factory=Counter)
    event_types: Counter[str] = field(default_factory=Counter)
    # mp_processing_time_ms minus the event's instant, in minutes, for events not imported.
    processing_lag_minutes: Counter[int] = field(default_factory=Counter)
    # What the checks judge the written files by (``check_facts``), taken as they were written.
    check_facts: dict[str, Any] = field(default_factory=dict)

    def processing_lag_summary(self) -> dict[str, Any]:
        """How far Mixpanel's processing trailed the events that came in live (not /import)."""
        fresh = sum(self.processing_lag_minutes.values())
        summary: dict[str, Any] = {"fresh_events": fresh, "median_minutes": None}
        seen = 0
        for minutes in sorted(self.processing_lag_minutes):
            seen += self.processing_lag_minutes[minutes]
            if seen * 2 >= fresh:
                summary["median_minutes"] = minutes
                break
        return summary


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity, capped by a container's CPU quota.

    The quota is cgroup v2's ``cpu.max``, which ``os.cpu_count`` ignores and a Kubernetes CPU
    limit sets.
    """
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, math.ceil(int(quota) / int(period))))


def map_day(
    raw_path: Path,
    events_path: Path,
    quarantine_path: Path,
    spec: MappingSpec,
    work_dir: Path,
    *,
    workers: int | None = None,
    wrap_seen: Callable[[SeenKeys], Any] | None = None,
    on_progress: Callable[[DayMappingStats], None] | None = None,
) -> DayMappingStats:
    """Map the raw file; repeats of Mixpanel's dedup key are dropped and counted.

    Each written ``_id`` is remembered with the dedup key of its event: a later line with the
    same ``_id`` is a repeat when its dedup key matches, and otherwise a different event that
    would collide with the first in AEP (same event, time and ``$insert_id``, another
    distinct_id): it is quarantined, so ``_id`` stays unique within the day.

    ``workers`` processes map the lines (default: one per CPU this process may use; a raw file under
    ``PARALLEL_MIN_RAW_BYTES`` is mapped in this process); the output does not depend on it.
    ``wrap_seen`` wraps the day's set of keys (an open day's load: seeded with earlier loads').
    ``on_progress`` gets the counts so far after each chunk of about a thousand lines.
    """
    if workers is None:
        big = raw_path.stat().st_size >= PARALLEL_MIN_RAW_BYTES
        workers = usable_cpus() if big else 1
    # Imported here: worker processes import this module, and need neither it nor numpy.
    from mixpanel_assets.xdm.seen_keys import SeenKeys

    stats = DayMappingStats()
    seen = SeenKeys(work_dir / "seen-ids", tag_bytes=KEY_TAG_BYTES)
    if wrap_seen is not None:
        seen = wrap_seen(seen)
    facts = FactsCollector(work_dir)
    events_file, quarantine_file = HashingFile(events_path), HashingFile(quarantine_path)
    try:
        with (
            igzip.open(raw_path, "rb") as raw,
            _gzip_writer(events_file) as events,
            _gzip_writer(quarantine_file) as quarantine,
        ):
            for chunk, outcomes in _mapped_chunks(_chunks(raw), spec, workers):
                _place(chunk, outcomes, seen, stats, events, quarantine, facts)
                if on_progress is not None:
                    on_progress(stats)
    finally:
        seen.close()
        facts.close()
        events_file.close()
        quarantine_file.close()
    stats.check_facts = facts_summary(
        events_sha256=events_file.sha256(),
        quarantine_sha256=quarantine_file.sha256(),
        records=facts.records,
        problems=facts.problems,
        walked_for_empty_values=facts.walked_for_empty_values,
        problem_examples=facts.problem_examples,
        ids_read=facts.ids_read,
        repeated_ids=facts.repeated,
        repeated_examples=facts.repeated_examples,
        quarantine_lines=facts.quarantine_lines,
    )
    return stats


def _gzip_writer(target: HashingFile) -> igzip.IGzipFile:
    """A gzip stream into ``target``, its header naming the file as ``igzip.open`` would, with
    no time in it: the same records give the same bytes (and SHA-256)."""
    return igzip.IGzipFile(target.name, "wb", _COMPRESS_LEVEL, fileobj=target, mtime=0)  # type: ignore[arg-type]


def _chunks(raw: IO[bytes]) -> Iterator[bytes]:
    """The decompressed file in pieces of about ``_CHUNK_BYTES``, each ending a line."""
    rest = b""
    while block := raw.read(_CHUNK_BYTES):
        end = block.rfind(b"\n") + 1
        if end:
            yield rest + block[:end]
            rest = block[end:]
        else:
            rest += block
    if rest:
        yield rest


def _mapped_chunks(
    chunks: Iterator[bytes], spec: MappingSpec, workers: int
) -> Iterator[tuple[bytes, ChunkOutcome]]:
    """Every chunk with its outcomes, in order: mapped here, or by ``workers`` processes with a
    bounded number of chunks in flight (memory stays flat)."""
    if workers <= 1:
        for chunk in chunks:
            yield chunk, map_chunk(chunk, spec)
        return
    # spawn: forking a process that runs threads (Dagster's) can deadlock the child.
    context = multiprocessing.get_context("spawn")
    fields = {name: getattr(spec, name) for name in MappingSpec.model_fields}
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(fields,)
    ) as pool:
        pending: deque[tuple[bytes, Future[ChunkOutcome]]] = deque()
        try:
            for chunk in chunks:
                pending.append((chunk, pool.submit(_map_chunk_in_worker, chunk)))
                if len(pending) >= workers * _CHUNKS_IN_FLIGHT_PER_WORKER:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        finally:
            for _, future in pending:  # on an error, do not map the rest of the day
                future.cancel()


_worker_spec: MappingSpec | None = None


def _start_worker(fields: dict[str, Any]) -> None:
    """Rebuild the spec in the worker (its compiled form holds functions, which do not pickle)."""
    global _worker_spec
    _exit_with_parent()
    _worker_spec = MappingSpec.model_construct(**fields)
    _worker_spec.compiled  # noqa: B018 (compile once, before the first chunk)
    # A worker's per-event objects hold no reference cycles: the spec and modules need no
    # more scanning, and young-object collections every 700 allocations would be wasted.
    gc.freeze()
    gc.set_threshold(_WORKER_GC_THRESHOLD)


def _exit_with_parent() -> None:
    """End this worker as soon as the run's process is gone (killed, it cannot stop us): a
    worker waiting for chunks would otherwise wait forever, holding memory and a CPU slot."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _map_chunk_in_worker(chunk: bytes) -> ChunkOutcome:
    assert _worker_spec is not None, "the pool's initializer sets the spec"
    return map_chunk(chunk, _worker_spec)


def _place(
    chunk: bytes,
    outcome: ChunkOutcome,
    seen: SeenKeys,
    stats: DayMappingStats,
    events: IO[bytes],
    quarantine: IO[bytes],
    facts: FactsCollector,
) -> None:
    """Write one chunk's records (or count them as duplicates) and quarantined lines.

    Per-record work stays in C (joins, Counters, one comprehension): this process is the one
    every worker waits on.
    """
    first_number = stats.raw_lines + 1
    numbers = range(first_number, first_number + outcome.lines)
    # Each quarantined line's number -> (the line, or None if only the chunk has it; reasons).
    quarantined: dict[int, tuple[bytes | None, list[str]]] = {
        first_number + index: (line, reasons) for index, line, reasons in outcome.quarantined
    }
    if quarantined:
        numbers = [number for number in numbers if number not in quarantined]
    event_ids = _pieces(outcome.event_ids, _EVENT_ID_BYTES)
    dedup_keys = _pieces(outcome.dedup_keys, DEDUP_KEY_BYTES)
    tags = [
        key + number.to_bytes(_LINE_NUMBER_BYTES, "big")
        for key, number in zip(dedup_keys, numbers, strict=True)
    ]
    firsts = seen.add_all(event_ids, tags)
    repeats = [index for index, first in enumerate(firsts) if first is not None]
    event_types = Counter(outcome.event_types)
    lags = Counter(outcome.lag_minutes)
    for index in repeats:  # few: the day's duplicates and _id collisions
        event_types[outcome.event_types[index]] -= 1
        lags[outcome.lag_minutes[index]] -= 1
        key, first = dedup_keys[index], firsts[index]
        assert first is not None
        if first[: len(key)] == key:
            stats.duplicates_dropped += 1
            continue
        quarantined[numbers[index]] = (
            None,
            [
                f"_id collision: line {int.from_bytes(first[len(key) :], 'big')} has the same "
                "_id (same event, time and $insert_id, or without one the same properties) but "
                "another distinct_id, so it is a different event by Mixpanel's dedup key; AEP "
                "keeps one record per _id"
            ],
        )
    written = outcome.records
    if repeats:
        dropped = set(repeats)
        kept = [index for index in range(len(event_ids)) if index not in dropped]
        facts.add(outcome, kept, [event_ids[index] for index in kept])
        written = outcome.records_without(repeats)
    else:
        kept = list(range(len(event_ids)))
        facts.add(outcome, kept, event_ids)
    del lags[None]
    stats.records += len(kept)
    stats.event_types.update(+event_types)
    stats.processing_lag_minutes.update(+lags)
    stats.raw_lines += outcome.lines
    stats.records_validated_in_full += len(outcome.in_full)
    events.write(written)
    if quarantined:
        lines: list[bytes] = []  # the chunk's lines, split only for an _id collision (rare)
        entries = []
        for number in sorted(quarantined):
            line, reasons = quarantined[number]
            if line is None:
                lines = lines or [piece for piece in chunk.split(b"\n") if piece]
                line = lines[number - first_number]
            stats.quarantined += 1
            stats.quarantine_reasons[reasons[0].split(":", 1)[0]] += 1
            entries.append(_quarantine_entry(number, line, reasons))
        quarantine.write(b"\n".join(entries) + b"\n")
        facts.quarantine_lines += len(entries)


def _pieces(joined: bytearray, size: int) -> list[bytes]:
    whole = bytes(joined)  # slices of bytes are bytes: one copy each, not two
    return [whole[start : start + size] for start in range(0, len(whole), size)]


def _quarantine_entry(line_number: int, line: bytes, reasons: list[str]) -> bytes:
    """The raw line kept exactly (as text, or base64 when it is not UTF-8) with its reasons."""
    entry: dict[str, Any] = {"line_number": line_number, "reasons": reasons}
    try:
        entry["line"] = line.decode("utf-8")
    except UnicodeDecodeError:
        entry["line_base64"] = base64.b64encode(line).decode("ascii")
    return orjson.dumps(entry)
