"""Mixpanel's ``time`` property read as a true UTC instant.

``time`` is epoch seconds, fractional seconds, or milliseconds (``time_in_ms=true``). Projects
created before 2023 store it as the project's local wall-clock time encoded as if it were UTC;
``project_local`` undoes that with the IANA zone, DST included.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from functools import cache
from zoneinfo import ZoneInfo

# Epoch seconds stay below this until the year 5138; milliseconds pass it from 1973 on.
_MILLISECONDS_THRESHOLD = 1e11

EVENT_TIME_REGIMES = ("utc", "project_local")


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def epoch_seconds(raw_time: int | float) -> float:
    """Seconds since the epoch, whether Mixpanel sent seconds or milliseconds."""
    return raw_time / 1000 if raw_time > _MILLISECONDS_THRESHOLD else float(raw_time)


def event_time_utc(raw_time: int | float, *, regime: str, timezone: str) -> datetime:
    """The true UTC instant of an event's ``time``."""
    seconds = epoch_seconds(raw_time)
    instant = datetime.fromtimestamp(seconds, UTC)
    if regime == "utc":
        return instant
    wall_clock = instant.replace(tzinfo=_zone(timezone))
    return wall_clock.astimezone(UTC)


def export_timezone(regime: str, timezone: str) -> str:
    """The zone of Mixpanel's export days (``from_date``/``to_date``), and so of the partitions.

    Projects created since 2023 (``utc``) get UTC days whatever their timezone setting; legacy
    projects get days in the project's timezone.
    """
    return "UTC" if regime == "utc" else timezone


def export_day(raw_time: int | float) -> date:
    """The export day Mixpanel files an event under: the calendar date of ``time`` read as UTC.

    For ``utc`` projects that is the event's UTC day; legacy projects store local wall-clock
    time, so the same reading gives the project-local day their exports use.
    """
    return datetime.fromtimestamp(epoch_seconds(raw_time), UTC).date()
