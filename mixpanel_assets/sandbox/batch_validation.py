"""AEP's processing of a completed batch on the local platform, every line validated.

Design notes: docs/design-notes.md, `sandbox/batch_validation.py`.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from mixpanel_assets.sandbox.record_checks import RecordJudge

# A batch this big is validated by worker processes: starting them costs about a second, which
# a batch of this size (about 190,000 records, some 6 s of validation on one core) repays.
PARALLEL_MIN_BYTES = 256 * 1024 * 1024
# Slices per PARALLEL_MIN_BYTES: small enough that the workers finish at about the same time.
_SLICES_PER_THRESHOLD = 4
_ROW_GROUP = 50_000
_READ_BYTES = 1 << 20
RECORD_SCHEMA = pa.schema(
    [(name, pa.string()) for name in ("_id", "timestamp", "eventType", "batch_id", "record")]
)
ROW_ERRORS = {
    "1401": "The row is not a JSON object and cannot be read or parsed.",
    "1555": "A required field is missing, or a field holds null or an empty value.",
    "1550": "The row does not conform to the dataset's XDM schema.",
}
ROW_CODE_ORDER = ("1401", "1555", "1550")
_REJECTED_BY_FAULT = "Rejected by a fault queued on the local platform."


@dataclass
class Tally:
    """What validating some lines found: accepted records and failed rows by row code."""

    accepted: int = 0
    failures: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class _Slice:
    """Bytes ``start`` to ``end`` of an uploaded file: whole lines, cut where a line starts."""

    path: Path
    start: int
    end: int


class EarlyValidation:
    """A loading batch's big files validated as they arrive, in worker processes of its own.

    At processing time a file's early part stands for it only when the file is unchanged since
    (size and modification time), the schema is the same and every line passed: a line refused
    early (a timestamp then in the future, say) is judged again with the processing's clock,
    and a record accepted early is accepted later too (the clock only moves on).
    """

    def __init__(self, work_dir: Path, batch_id: str, schema: dict[str, Any]) -> None:
        self.schema = schema
        self._work_dir = work_dir
        self._batch_id = batch_id
        work_dir.mkdir(parents=True)
        # spawn: forking a process that runs threads (the server's) can deadlock the child.
        context = multiprocessing.get_context("spawn")
        self.pool = ProcessPoolExecutor(_usable_cpus(), mp_context=context)
        self._files: dict[Path, tuple[tuple[int, int], Future[Tally], Path]] = {}

    def add(self, path: Path) -> None:
        """Validate the uploaded file ``path`` (replacing any earlier upload of it)."""
        part = self._work_dir / f"early-{len(self._files)}-{path.stat().st_mtime_ns}.parquet"
        stamp = _stamp(path)
        future = self.pool.submit(
            _validate_slices,
            [_Slice(path, 0, stamp[0])],
            part,
            part.with_suffix(".failed.jsonl"),
            self._batch_id,
            self.schema,
            datetime.now(UTC),
        )
        self._files[path] = (stamp, future, part)

    def part_of(self, path: Path, schema: dict[str, Any]) -> tuple[Tally, Path] | None:
        """The tally and Parquet part of ``path`` validated early, if they stand for it now."""
        entry = self._files.get(path)
        if entry is None or schema != self.schema or _stamp(path) != entry[0]:
            return None
        try:
            tally = entry[1].result()
        except Exception:  # judged again at processing time, which reports the fault
            return None
        return (tally, entry[2]) if not tally.failures else None

    def close(self) -> None:
        """Stop the workers and remove the early parts."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self._work_dir, ignore_errors=True)


def validated_early(size: int, parallel_min_bytes: int) -> bool:
    """Whether an uploaded file of ``size`` bytes is worth a worker of its own while it loads.

    That is, when it is as big as a slice of a batch that workers validate.
    """
    return size >= max(1, parallel_min_bytes // _SLICES_PER_THRESHOLD)


def _stamp(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_size, status.st_mtime_ns


def record_parts(records_dir: Path) -> list[Path]:
    """A batch's Parquet parts, in the batch's line order."""
    return sorted(records_dir.glob("part-*.parquet"), key=lambda part: int(part.stem[5:]))


def validate_batch(
    files: list[Path],
    records_dir: Path,
    failed_path: Path,
    *,
    batch_id: str,
    schema: dict[str, Any],
    now: datetime,
    rejected_rows: int = 0,
    parallel_min_bytes: int = PARALLEL_MIN_BYTES,
    early: EarlyValidation | None = None,
) -> Tally:
    """Validate every line of ``files``, in order, into accepted records and failed rows.

    Accepted records go into Parquet parts in ``records_dir`` (see ``record_parts``), failed rows
    into ``failed_path``.

    The first ``rejected_rows`` valid rows are rejected anyway (a queued fault): which rows those
    are depends on every row before them, so such a batch is validated in this process, as is
    one under ``parallel_min_bytes`` (workers would cost more than they save). Any other batch is
    cut into slices of about a quarter of ``parallel_min_bytes``, one worker process per usable
    CPU validating a slice at a time; a file ``early`` validated as it was uploaded takes its
    early part instead (``EarlyValidation.part_of``), and the rest go to ``early``'s workers.
    ``schema`` is the record schema of the dataset (``record_checks.record_schema``); ``now`` is
    the instant timestamps must not pass.
    """
    sizes = [path.stat().st_size for path in files]
    if rejected_rows or (sum(sizes) < parallel_min_bytes and early is None):
        whole = [_Slice(path, 0, size) for path, size in zip(files, sizes, strict=True)]
        return _validate_slices(
            whole, part_path(records_dir, 0), failed_path, batch_id, schema, now, rejected_rows
        )
    slice_bytes = max(1, parallel_min_bytes // _SLICES_PER_THRESHOLD)
    tally = Tally()
    slices: list[tuple[int, _Slice]] = []  # with the index of the part each one writes
    index = 0
    for path in files:
        done = early.part_of(path, schema) if early is not None else None
        if done is not None:  # the file's early part, in its place among the parts
            tally.accepted += done[0].accepted
            os.replace(done[1], part_path(records_dir, index))
            index += 1
            continue
        for piece in _cut(path, slice_bytes):
            slices.append((index, piece))
            index += 1
    with ExitStack() as stack:
        if early is not None:
            pool = early.pool
        else:
            # spawn: forking a process that runs threads (the server's) can deadlock the child.
            context = multiprocessing.get_context("spawn")
            workers = max(1, min(_usable_cpus(), len(slices)))
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=context))
        failed_parts = [records_dir / f"failed-{number:05d}.jsonl" for number, _ in slices]
        futures = [
            pool.submit(
                _validate_slices,
                [piece],
                part_path(records_dir, number),
                failed_part,
                batch_id,
                schema,
                now,
            )
            for (number, piece), failed_part in zip(slices, failed_parts, strict=True)
        ]
        try:
            with failed_path.open("wb") as failed_out:
                for future, failed_part in zip(futures, failed_parts, strict=True):
                    part = future.result()
                    tally.accepted += part.accepted
                    tally.failures += part.failures
                    with failed_part.open("rb") as rows:
                        shutil.copyfileobj(rows, failed_out)
                    failed_part.unlink()
        finally:
            for future in futures:  # on an error, do not validate the rest of the batch
                future.cancel()
    return tally


def _usable_cpus() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def part_path(records_dir: Path, index: int) -> Path:
    """The ``index``-th Parquet part of a batch's records (``record_parts`` lists them)."""
    return records_dir / f"part-{index:05d}.parquet"


def _cut(path: Path, slice_bytes: int) -> Iterator[_Slice]:
    """``path`` in slices of about ``slice_bytes``, each ending where a line ends."""
    size = path.stat().st_size
    with path.open("rb") as source:
        start = 0
        while start < size:
            end = start + slice_bytes
            if end < size:
                source.seek(end - 1)
                source.readline()  # to the end of the line holding the slice's last byte
                end = source.tell()
            yield _Slice(path, start, min(end, size))
            start = end


def _lines(piece: _Slice) -> Iterator[bytes]:
    """The slice's non-blank lines, stripped (read a block at a time: a line at a time from the
    file cost 4 µs a line, a third of validating it)."""
    with piece.path.open("rb") as source:
        source.seek(piece.start)
        left, rest = piece.end - piece.start, b""
        while left > 0 and (block := source.read(min(left, _READ_BYTES))):
            left -= len(block)
            lines = (rest + block).split(b"\n")
            rest = lines.pop()
            yield from filter(None, map(bytes.strip, lines))
        if line := rest.strip():
            yield line


def _validate_slices(
    slices: list[_Slice],
    records_path: Path,
    failed_path: Path,
    batch_id: str,
    schema: dict[str, Any],
    now: datetime,
    rejected_rows: int = 0,
) -> Tally:
    """Validate the slices' lines, in order, into one Parquet part and one failed-rows file
    (what a worker process runs, and a small batch in the emulator's own process)."""
    tally = Tally()
    judge = RecordJudge(schema)
    with _RecordSink(records_path, batch_id) as sink, failed_path.open("wb") as failed_out:
        for piece in slices:
            for line in _lines(piece):
                record, failed_row = _validate_line(line, judge, now)
                if record is not None and rejected_rows:
                    rejected_rows -= 1
                    record, failed_row = None, _rejected_row(line)
                if record is not None:
                    sink.add(record, line)
                    tally.accepted += 1
                elif failed_row is not None:
                    tally.failures[failed_row["_errors"][0]["code"]] += 1
                    failed_out.write(orjson.dumps(failed_row) + b"\n")
    return tally


def _validate_line(
    line: bytes, judge: RecordJudge, now: datetime
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(record, None)`` for a record AEP accepts, else ``(None, failed row)``."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        return None, {
            "_corrupt_record": line.decode("utf-8", "replace"),
            "_errors": [{"code": "1401", "message": ROW_ERRORS["1401"]}],
        }
    problems = judge.problems(record, now)
    if not problems:
        return record, None
    codes = sorted({code for code, _, _ in problems}, key=ROW_CODE_ORDER.index)
    return None, {
        "_corrupt_record": line.decode("utf-8", "replace"),
        "_errors": [{"code": code, "message": ROW_ERRORS[code]} for code in codes],
        "_validationErrors": [
            {"code": code, "message": message, "pointerToViolation": _pointer(path)}
            for code, path, message in problems
        ],
    }


class _RecordSink:
    """Accepted records into one Parquet file, a row group at a time, so any batch size fits.

    Cheap per record (about 2 µs less than strings through ``pa.table``): the columns are Python
    lists turned into Arrow arrays once a row group, a record's line stays bytes until one cast
    checks the whole column as UTF-8, and only the columns of few distinct values are
    dictionary-encoded.
    """

    def __init__(self, path: Path, batch_id: str) -> None:
        self._writer = pq.ParquetWriter(
            path, RECORD_SCHEMA, use_dictionary=["eventType", "batch_id"]
        )
        self._batch_id = batch_id
        self._ids: list[str] = []
        self._timestamps: list[str] = []
        self._event_types: list[str | None] = []
        self._lines: list[bytes] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._flush()
        self._writer.close()

    def add(self, record: dict[str, Any], line: bytes) -> None:
        """Add one accepted record (its line kept whole), writing a row group once one is full."""
        event_type = record.get("eventType")
        self._ids.append(record["_id"])
        self._timestamps.append(record["timestamp"])
        self._event_types.append(event_type if isinstance(event_type, str) else None)
        self._lines.append(line)
        if len(self._lines) >= _ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if not self._lines:
            return
        columns = [
            pa.array(self._ids, pa.string()),
            pa.array(self._timestamps, pa.string()),
            pa.array(self._event_types, pa.string()),
            pa.array([self._batch_id] * len(self._lines), pa.string()),
            pa.array(self._lines, pa.binary()).cast(pa.string()),
        ]
        self._writer.write_table(pa.table(columns, schema=RECORD_SCHEMA))
        self._ids, self._timestamps, self._event_types, self._lines = [], [], [], []


def _rejected_row(line: bytes) -> dict[str, Any]:
    return {
        "_corrupt_record": line.decode("utf-8", "replace"),
        "_errors": [{"code": "1550", "message": ROW_ERRORS["1550"]}],
        "_validationErrors": [
            {"code": "1550", "message": _REJECTED_BY_FAULT, "pointerToViolation": "#"}
        ],
    }


def _pointer(path: str) -> str:
    """A validator path (``a/b/0`` or ``(record)``) as AEP's ``pointerToViolation``."""
    return "#" if path == "(record)" else f"#/{path}"
