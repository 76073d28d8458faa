"""A load of the open day mapped against the keys its day's earlier loads made live."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
from dagster import Failure
from isal import igzip

from mixpanel_assets.intraday.ledger import DayLedger, LedgerState
from mixpanel_assets.intraday.loaded_keys import KeySet, LoadedKeys, RunWriter, SeededKeys
from mixpanel_assets.storage import PartitionFiles
from mixpanel_assets.xdm.day_mapping import KEY_TAG_BYTES

_IDS_PER_LOOK_UP = 4096


@dataclass
class LoadKeys:
    """The keys of the day's earlier loads, and the writer of this load's."""

    earlier: LoadedKeys
    writer: RunWriter
    earlier_raw_lines: int  # the day's earlier loads' raw lines and quarantined lines
    earlier_quarantined: int

    def wrap(self, seen: KeySet) -> SeededKeys:
        """``seen`` seeded with the earlier loads' keys."""
        return SeededKeys(seen, self.earlier, self.writer)

    def files(self) -> dict[str, Path]:
        """The keys this load's records add, as partition files ``keys-N``."""
        return {f"keys-{index}": path for index, path in enumerate(self.writer.finish())}


@contextmanager
def earlier_loads_keys(
    partition_files: PartitionFiles, key: str, load: dict[str, Any], staging: Path
) -> Iterator[LoadKeys]:
    """The keys the day's earlier loads made live, for a load to leave out."""
    ledger = DayLedger.of(partition_files, key)
    state = ledger.read()
    if len(state.loads) != load["number"] - 1:
        raise Failure(
            f"{key}: the raw export is the day's load {load['number']}, but the day's ledger now "
            f"holds {len(state.loads)} load(s): another run of the day loaded meanwhile. "
            "Materialize the day again from mixpanel_raw_events.",
            allow_retries=False,
        )
    with ledger.loaded_keys(state) as earlier:
        yield LoadKeys(
            earlier,
            RunWriter(staging, "keys", KEY_TAG_BYTES),
            sum(load.get("raw_lines", 0) for load in state.loads),
            sum(load.get("quarantined", 0) for load in state.loads),
        )


def ids_live_in_earlier_loads(
    partition_files: PartitionFiles, key: str, manifest: dict[str, Any], events: Path, shown: int
) -> tuple[int, list[str]]:
    """How many records of an open day's load an earlier load already made live, and a few ``_id``s.

    (0, []) for a closed day. Streams the file, a batch of ids at a time.
    """
    load = manifest.get("intraday_load")
    if load is None:
        return 0, []
    ledger = DayLedger.of(partition_files, key)
    earlier = LedgerState(ledger.read().loads[: load["number"] - 1])
    repeated, examples = 0, []
    with ledger.loaded_keys(earlier) as keys, igzip.open(events, "rb") as lines:
        while batch := [orjson.loads(line)["_id"] for line in islice(lines, _IDS_PER_LOOK_UP)]:
            found = keys.find([bytes.fromhex(identifier) for identifier in batch])
            repeated += len(found)
            examples += [key.hex() for key in found][: shown - len(examples)]
    return repeated, examples
