"""What a run of the open day exports, and how its partitions say how complete the day is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dagster import MetadataValue

from mixpanel_assets.intraday.ledger import DayLedger, load_range, range_where
from mixpanel_assets.storage import PartitionFiles

DAY_COMPLETE = "day_complete"
FRESH_UNTIL = "fresh_until"


@dataclass(frozen=True)
class OpenDayLoad:
    """One intraday load: the day's ``number``-th, of events processed in (start_ms, end_ms]."""

    number: int
    start_ms: int | None
    end_ms: int
    earlier: list[dict[str, Any]]  # the committed loads' ranges and requests

    @property
    def where(self) -> str:
        """The export's ``where`` for this load's processing-time range."""
        return range_where(self.start_ms, self.end_ms)

    def describe(self, request: dict[str, str]) -> dict[str, Any]:
        """This load as the manifest records it."""
        return {
            "number": self.number,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "request": request,
        }


def open_day_load(partition_files: PartitionFiles, key: str, now: datetime) -> OpenDayLoad:
    """The next load of the open day ``key``, after those its ledger holds."""
    state = DayLedger.of(partition_files, key).read()
    start, end = load_range(state, int(now.timestamp() * 1000))
    earlier = [
        {
            "number": load["number"],
            "start_ms": load["start_ms"],
            "end_ms": load["end_ms"],
            "request": load.get("request"),
        }
        for load in state.loads
    ]
    return OpenDayLoad(len(state.loads) + 1, start, end, earlier)


def day_state(load: OpenDayLoad | None, request: dict[str, str]) -> dict[str, Any]:
    """Manifest entries: a closed day is whole; an open day's load says its range."""
    if load is None:
        return {DAY_COMPLETE: True}
    this = load.describe(request)
    return {DAY_COMPLETE: False, "intraday_load": this, "intraday_loads": [*load.earlier, this]}


def day_state_metadata(load: OpenDayLoad | None) -> dict[str, Any]:
    """The metadata saying whether the day is complete and, if not, until when it is fresh."""
    if load is None:
        return {DAY_COMPLETE: True}
    return {
        DAY_COMPLETE: False,
        "intraday_load": load.number,
        FRESH_UNTIL: fresh_until(load.end_ms),
    }


def fresh_until(end_ms: int) -> MetadataValue:
    """The latest processing time loaded, as the UI shows it."""
    return MetadataValue.text(datetime.fromtimestamp(end_ms / 1000, UTC).isoformat())
