"""The open day's ledger: what each of its loads made live in AEP, kept next to the partitions.

``<data dir>/intraday_loads/<day>/ledger.json`` lists the day's committed loads (the
``mp_processing_time_ms`` range each exported, its batch, counts, and its key and quarantine
files beside it). A load commits only once its batch is live, under the day's AEP lock, so the
ledger never claims more than AEP holds; a batch AEP holds that the ledger lacks is a load that
died after its batch went live, and the next load replays it (see ``aep.increments``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mixpanel_assets.intraday.loaded_keys import LoadedKeys
from mixpanel_assets.storage import FileStore, PartitionFiles
from mixpanel_assets.xdm.day_mapping import KEY_TAG_BYTES

LEDGER_STORE = "intraday_loads"
LEDGER_FILE = "ledger.json"
# Events Mixpanel processed in the last minute wait for the next load: an export may not show
# every one of them yet, and the closing run's full export is the only other chance.
VISIBILITY_MARGIN_MS = 60_000


@dataclass
class LedgerState:
    """What a day's ledger holds: its loads, whether the day is complete, the rows ingested."""

    loads: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = False
    aep_rows_ingested: int = 0  # every record uploaded into a batch of the day that went live

    @property
    def watermark_ms(self) -> int | None:
        """The end of the processing-time range the day's loads cover (None before the first)."""
        return self.loads[-1]["end_ms"] if self.loads else None

    @property
    def batch_ids(self) -> list[str]:
        """The AEP batches of the day's loads."""
        return [load["batch_id"] for load in self.loads if load.get("batch_id")]

    @property
    def live_records(self) -> int:
        """The records the day's loads made live."""
        return sum(load["records"] for load in self.loads)

    def rows_per_unique_event(self) -> float:
        """AEP rows ingested per record made live (1.0 when nothing was loaded twice)."""
        return round(self.aep_rows_ingested / self.live_records, 4) if self.live_records else 0.0


@dataclass(frozen=True)
class DayLedger:
    """The ledger file of one day's intraday loads."""

    store: FileStore

    @classmethod
    def of(cls, partition_files: PartitionFiles, partition_key: str) -> DayLedger:
        """The ledger of the day ``partition_key``."""
        return cls(partition_files.asset_store(LEDGER_STORE).child(partition_key))

    def read(self) -> LedgerState:
        """The ledger as saved (empty before the day's first load)."""
        try:
            data = json.loads(self.store.read_bytes(LEDGER_FILE))
        except FileNotFoundError:
            return LedgerState()
        return LedgerState(data["loads"], data["complete"], data["aep_rows_ingested"])

    def commit(
        self, state: LedgerState, entry: dict[str, Any], files: dict[str, Path], *, complete: bool
    ) -> LedgerState:
        """Put the load's files in, then add its entry in one write of the ledger."""
        number = len(state.loads) + 1
        names = {role: f"load-{number:04d}-{role}" for role in files}
        for role, path in files.items():
            self.store.put(path, names[role])
        entry = {
            **entry,
            "number": number,
            "files": names,
            "committed_at": datetime.now(UTC).isoformat(),
        }
        new = LedgerState(
            [*state.loads, entry],
            complete,
            state.aep_rows_ingested + entry.get("uploaded_records", 0),
        )
        body = {
            "loads": new.loads,
            "complete": complete,
            "aep_rows_ingested": new.aep_rows_ingested,
        }
        self.store.write_bytes(LEDGER_FILE, json.dumps(body, indent=2).encode())
        return new

    @contextmanager
    def loaded_keys(self, state: LedgerState) -> Iterator[LoadedKeys]:
        """The keys of every committed load, from local copies of their run files."""
        with ExitStack() as stack:
            paths = [
                stack.enter_context(self.store.local_copy(name))
                for load in state.loads
                for role, name in load.get("files", {}).items()
                if role.startswith("keys-")
            ]
            yield LoadedKeys(paths, KEY_TAG_BYTES)


def load_range(state: LedgerState, now_ms: int) -> tuple[int | None, int]:
    """The processing-time range (exclusive start, inclusive end) the next load exports."""
    start = state.watermark_ms
    end = now_ms - VISIBILITY_MARGIN_MS
    return start, end if start is None else max(start, end)


def range_where(start_ms: int | None, end_ms: int) -> str:
    """Mixpanel's segmentation expression for events processed in (start, end]."""
    processed = 'number(properties["mp_processing_time_ms"])'
    upper = f"{processed} <= {end_ms}"
    return upper if start_ms is None else f"{processed} > {start_ms} and {upper}"
