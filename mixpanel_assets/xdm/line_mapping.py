"""One export line, or a chunk of lines, -> XDM records: what a mapping worker runs.

Design notes: docs/design-notes.md, `xdm/line_mapping.py`.
"""

from __future__ import annotations

from itertools import accumulate
from typing import Any, NamedTuple

import orjson

from mixpanel_assets.xdm.check_facts import judged_now, missing_required
from mixpanel_assets.xdm.mapping import (
    FUTURE_TOLERANCE_SECONDS,
    InvalidEvent,
    MappingSpec,
    dedup_key,
    map_event,
    parse_event,
    timestamp_proven,
)
from mixpanel_assets.xdm.schema import CustomField, empty_value_paths, schema_errors
from mixpanel_assets.xdm.validity import ProofFailed, apply_defaults, sampled

# Processing lags are counted in whole minutes, clamped to two days either way: enough to see a
# timezone offset, and a bounded histogram however many events the day holds.
_LAG_LIMIT_MINUTES = 2 * 24 * 60


class MappedEvent(NamedTuple):
    """One event mapped: its XDM record, dedup key, processing lag and full-validation flag."""

    record: dict[str, Any]
    dedup_key: bytes
    # mp_processing_time_ms minus the event's instant (s); None for imported events.
    processing_lag_seconds: float | None
    # Whether the record went through the full validation (the sample, or not proven).
    validated_in_full: bool = False


def validation_errors(
    record: dict[str, Any], tenant_id: str, custom_fields: tuple[CustomField, ...] = ()
) -> list[str]:
    """Why AEP would reject ``record``: empty values and schema violations (empty when valid)."""
    errors = [f"empty value: {path}" for path in empty_value_paths(record)]
    errors.extend(f"schema: {error}" for error in schema_errors(record, tenant_id, custom_fields))
    return errors


def map_line(line: bytes, spec: MappingSpec) -> MappedEvent | list[str]:
    """One export line as a valid XDM record, or the reasons it cannot be one.

    When the spec's proof holds (``validity``), records are valid by construction: only the
    sample, and those whose timestamp took a path the proof does not name, are validated in
    full, and one that fails raises ``ProofFailed`` (a bug: the day must fail, not quarantine).
    Otherwise every record gets the schema's verdict (``map_event`` writes no empty values), and
    one the schema rejects gets ``validation_errors``' full account.
    """
    try:
        name, properties = parse_event(line)
        record, seconds = map_event(name, properties, spec.compiled)
        key = dedup_key(name, properties)
    except InvalidEvent as problem:
        return [str(problem)]
    verdict = _settle(record, seconds, spec)
    if isinstance(verdict, list):
        return verdict
    return MappedEvent(record, key, processing_lag(properties, seconds), verdict)


def _settle(record: dict[str, Any], seconds: float, spec: MappingSpec) -> bool | list[str]:
    """``record`` made ready to write: whether it was validated in full, or why it is invalid."""
    mapping = spec.compiled
    proof = mapping.proof
    if proof is None:
        if not mapping.is_valid(record):
            return validation_errors(record, spec.tenant_id, mapping.custom_tenant_fields)
        return True
    apply_defaults(record, proof)
    if sampled(record["_id"]) or not timestamp_proven(seconds):
        _validate_in_full(record, spec)
        return True
    return False


def processing_lag(properties: dict[str, Any], seconds: float) -> float | None:
    """``mp_processing_time_ms`` minus the event's instant (s); None for imported events."""
    processed_ms = properties.get("mp_processing_time_ms")
    if type(processed_ms) is int and properties.get("$import") is not True:
        return processed_ms / 1000 - seconds
    return None


def _validate_in_full(record: dict[str, Any], spec: MappingSpec) -> None:
    """Raise ``ProofFailed`` unless the whole schema and the empty-value scan accept ``record``
    and the schema's validator leaves it as it is (no default the mapping failed to write)."""
    mapping = spec.compiled
    checked = orjson.loads(orjson.dumps(record))  # a deep copy: validators write defaults
    errors = validation_errors(checked, spec.tenant_id, mapping.custom_tenant_fields)
    if not errors and checked != record:
        errors = ["the schema's validator added defaults the mapping did not write"]
    if errors:
        raise ProofFailed(
            f"record {record.get('_id')!r} failed the full validation although the mapping "
            f"proved every record valid: {'; '.join(errors[:5])}. This is a bug in "
            "mixpanel_assets' mapping proof (xdm/validity.py): nothing of the day was "
            "published; report it with this message."
        )


class ChunkOutcome(NamedTuple):
    """What a worker sends back for one chunk: a few flat lists, cheap to pickle.

    The lists of mapped lines are in line order; ``quarantined`` holds the index (among the
    chunk's non-empty lines), the line and the reasons of each line that could not be mapped.
    """

    lines: int
    event_ids: bytearray  # each record's ``_id`` as its digest, back to back
    dedup_keys: bytearray  # each record's dedup key, back to back
    records: bytes  # the JSON lines, joined
    record_ends: list[int]  # where each line of ``records`` ends
    event_types: list[str]
    lag_minutes: list[int | None]  # processing lag, None for imported events
    quarantined: list[tuple[int, bytes, list[str]]]
    # For the checks: what ``missing_required`` finds in a written record, by its index in
    # ``records`` (judged apart from the mapping, see ``check_facts``).
    problems: list[tuple[int, str]]
    # The indices in ``records`` of those validated in full (and walked for empty values).
    in_full: list[int]

    def record(self, index: int) -> bytes:
        """The JSON line of record ``index``."""
        return self.records[self._start(index) : self.record_ends[index]]

    def records_without(self, dropped: list[int]) -> bytes:
        """The JSON lines but those of the records ``dropped`` (indices in ascending order)."""
        pieces, start = [], 0
        view = memoryview(self.records)
        for index in dropped:
            pieces.append(view[start : self._start(index)])
            start = self.record_ends[index]
        pieces.append(view[start:])
        return b"".join(pieces)

    def _start(self, index: int) -> int:
        return self.record_ends[index - 1] if index else 0


def map_chunk(chunk: bytes, spec: MappingSpec) -> ChunkOutcome:
    """The outcome of every non-empty line of ``chunk``: ``map_line`` of each, unrolled."""
    records: list[bytes] = []
    outcome = ChunkOutcome(0, bytearray(), bytearray(), b"", [], [], [], [], [], [])
    mapping = spec.compiled
    now = judged_now()
    latest = now.timestamp() + FUTURE_TOLERANCE_SECONDS
    add_id, add_key = outcome.event_ids.extend, outcome.dedup_keys.extend
    event_types, lags = outcome.event_types, outcome.lag_minutes
    index = -1
    for index, line in enumerate(filter(None, chunk.split(b"\n"))):
        try:
            name, properties = parse_event(line)
            record, seconds = map_event(name, properties, mapping, latest)
            key = dedup_key(name, properties)
        except InvalidEvent as problem:
            outcome.quarantined.append((index, line, [str(problem)]))
            continue
        in_full = _settle(record, seconds, spec)
        if type(in_full) is list:
            outcome.quarantined.append((index, line, in_full))
            continue
        if in_full:
            outcome.in_full.append(len(records))
        add_id(bytes.fromhex(record["_id"]))
        add_key(key)
        missing = missing_required(record, now, scan_empty=bool(in_full))
        if missing:
            outcome.problems.append((len(records), missing))
        records.append(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        event_types.append(record["eventType"])
        lag = processing_lag(properties, seconds)
        lags.append(
            None
            if lag is None
            else max(-_LAG_LIMIT_MINUTES, min(_LAG_LIMIT_MINUTES, round(lag / 60)))
        )
    outcome.record_ends.extend(accumulate(map(len, records)))
    return outcome._replace(lines=index + 1, records=b"".join(records))
