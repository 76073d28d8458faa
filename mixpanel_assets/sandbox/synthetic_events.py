"""Deterministic synthetic Mixpanel raw-export lines, shaped like real Export API output.

Every value derives from ``(project_id, day)``; days are streamed, never held in memory. Design
notes (the odd cases and where they fall): docs/local-sandbox.md.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from mixpanel_assets.sandbox.synthetic_users import (
    Props,
    User,
    alnum_id,
    mobile_session,
    random_uuid,
    user_pool,
    web_session,
)

TIME_REGIMES = ("utc", "project_local")
ODD_CASES = (
    "duplicate_line",  # the previous line emitted again, byte for byte (same dedup key)
    "missing_insert_id",
    "missing_distinct_id",  # `$device_id` still present
    "no_identity",  # no distinct_id, no $device_id, no $user_id
    "float_time",  # `time` with milliseconds, e.g. 1721228056.002
    "case_colliding_names",  # `utm_medium` and `UTM_Medium`
    "odd_property_names",  # a space, a dot, a newline and a leading `$` in names
    "line_separators",  # U+2028 and U+2029 inside a string value
    "non_ascii",  # emoji and CJK in values
    "reused_insert_id",  # the previous (different) event's `$insert_id`
)
ODD_CASE_BLOCK = 100
# Odd cases only in every other block (0.5 % of lines): an event without any identity is
# quarantined, and a day (or an open day's first hours) must sit well inside the default 1 %
# quarantine limit.
_EVERY_OTHER_BLOCK = frozenset({"no_identity"})
_ODD_CASE_SPACING = 9


class _DayEvents:
    """Endless base events (sessions of pooled users) whose true instants fall inside one day.

    Consecutive events differ in (distinct_id, time), which the ``reused_insert_id`` case relies
    on: within a session time strictly increases, and consecutive sessions have distinct users.
    """

    def __init__(
        self, rng: random.Random, project_id: str, day: date, timezone: str, time_regime: str
    ) -> None:
        zone = ZoneInfo(timezone)
        self._rng = rng
        self._users = user_pool(project_id)
        self._zone = zone
        self._start = int(datetime.combine(day, time(), zone).timestamp())
        self._end = int(datetime.combine(day + timedelta(days=1), time(), zone).timestamp())
        self._local = time_regime == "project_local"
        first, last = self._offset(self._start), self._offset(self._end - 1)
        # Outside DST-transition days the offset is constant: skip the per-event lookup.
        self._constant_offset = first if first == last else None

    def _offset(self, epoch: int) -> int:
        offset = datetime.fromtimestamp(epoch, self._zone).utcoffset()
        return int(offset.total_seconds()) if offset is not None else 0

    def encode_time(self, true_epoch: int) -> int:
        """``time`` as Mixpanel stores it: true UTC, or local wall-clock read as UTC (legacy)."""
        if not self._local:
            return true_epoch
        offset = self._constant_offset
        return true_epoch + (offset if offset is not None else self._offset(true_epoch))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rng, users = self._rng, self._users
        span = self._end - self._start
        previous_user = -1
        while True:
            index = rng.randrange(len(users))
            if index == previous_user:
                index = (index + 1) % len(users)
            previous_user = index
            user = users[index]
            web = user.platform in ("web", "wordpress")
            session = web_session(rng, user) if web else mobile_session(rng, user)
            moment = self._start + int(rng.random() * span)
            for name, extra in session:
                if moment >= self._end:
                    break
                yield self._event(name, user, moment, extra)
                moment += 1 + int(rng.random() * 90)

    def _event(self, name: str, user: User, moment: int, extra: Props) -> dict[str, Any]:
        rng = self._rng
        processed = moment * 1000 + int(rng.random() * 1000) + 1000 + int(rng.random() * 8000)
        imported = rng.random() < 0.04
        web = user.platform == "web"
        endpoint = "api-js.mixpanel.com" if web and not imported else "api.mixpanel.com"
        props: Props = {
            "time": self.encode_time(moment),
            **user.props,
            "$insert_id": alnum_id(rng) if web else random_uuid(rng),
            "$mp_api_endpoint": endpoint,
            "$mp_api_timestamp_ms": processed - 5 - int(rng.random() * 300),
            "mp_processing_time_ms": processed,
            **extra,
        }
        if imported:
            props["$import"] = True
        return {"event": name, "properties": props}


def _check(count: int, time_regime: str) -> None:
    if count < 0:
        raise ValueError(f"event count must be >= 0, got {count}")
    if time_regime not in TIME_REGIMES:
        raise ValueError(f"time_regime must be one of {TIME_REGIMES}, got {time_regime!r}")


def synthetic_day(
    project_id: str,
    day: date,
    *,
    events_per_day: int,
    timezone: str = "UTC",
    time_regime: str = "utc",
) -> Iterator[bytes]:
    """The day's export lines (no trailing newline), streamed; identical for identical arguments.

    The true instant of every event lies inside ``day`` in ``timezone``; ``time_regime`` says how
    ``time`` encodes it (see ``TIME_REGIMES``). Odd cases follow the module docstring's schedule.
    """
    _check(events_per_day, time_regime)
    rng = random.Random(f"{project_id}:{day.isoformat()}")
    events = iter(_DayEvents(rng, project_id, day, timezone, time_regime))
    return _with_odd_cases(rng, events, events_per_day)


def _block_schedule(rng: random.Random) -> dict[int, str]:
    kinds = list(ODD_CASES)
    rng.shuffle(kinds)
    first = 1 + rng.randrange(_ODD_CASE_SPACING)
    return {first + _ODD_CASE_SPACING * i: kind for i, kind in enumerate(kinds)}


def _with_odd_cases(
    rng: random.Random, events: Iterator[dict[str, Any]], count: int
) -> Iterator[bytes]:
    schedule: dict[int, str] = {}
    previous_line = b""
    previous_insert_id = ""
    for index in range(count):
        position = index % ODD_CASE_BLOCK
        if position == 0:
            schedule = _block_schedule(rng)
        kind = schedule.get(position)
        if kind in _EVERY_OTHER_BLOCK and (index // ODD_CASE_BLOCK) % 2:
            kind = None
        if kind == "duplicate_line":
            yield previous_line
            continue
        event = next(events)
        props = event["properties"]
        insert_id = props["$insert_id"]
        if kind == "reused_insert_id":
            props["$insert_id"] = previous_insert_id
        elif kind is not None:
            _MUTATIONS[kind](rng, props)
        previous_line = orjson.dumps(event)
        previous_insert_id = insert_id
        yield previous_line


def _float_time(rng: random.Random, props: Props) -> None:
    props["time"] += (1 + rng.randrange(999)) / 1000


def _case_colliding_names(rng: random.Random, props: Props) -> None:
    props.setdefault("utm_medium", "email")
    props["UTM_Medium"] = rng.choice(("Email", "CPC"))


def _odd_property_names(rng: random.Random, props: Props) -> None:
    props["Plan Type"] = rng.choice(("free", "pro"))
    props["cart.total"] = round(rng.random() * 500, 2)
    props["note\nsecond line"] = "property name with a newline"
    props["$custom_experiment"] = rng.choice(("control", "variant-b"))


def _line_separators(rng: random.Random, props: Props) -> None:
    props["comment"] = "first line\u2028second line\u2029third line"


def _non_ascii(rng: random.Random, props: Props) -> None:
    props["review_text"] = rng.choice(("很好用 推荐 👍", "素晴らしい 🎉", "최고예요 ✨"))
    props["nickname"] = "Zoë 🚀"


def _drop_insert_id(rng: random.Random, props: Props) -> None:
    del props["$insert_id"]


def _drop_distinct_id(rng: random.Random, props: Props) -> None:
    del props["distinct_id"]


def _drop_identity(rng: random.Random, props: Props) -> None:
    for key in ("distinct_id", "$device_id", "$user_id"):
        props.pop(key, None)


_MUTATIONS: dict[str, Callable[[random.Random, Props], None]] = {
    "missing_insert_id": _drop_insert_id,
    "missing_distinct_id": _drop_distinct_id,
    "no_identity": _drop_identity,
    "float_time": _float_time,
    "case_colliding_names": _case_colliding_names,
    "odd_property_names": _odd_property_names,
    "line_separators": _line_separators,
    "non_ascii": _non_ascii,
}


def late_events(
    project_id: str,
    day: date,
    *,
    count: int,
    batch: int,
    processed_at_ms: int,
    timezone: str = "UTC",
    time_regime: str = "utc",
) -> list[bytes]:
    """``count`` events of ``day`` that Mixpanel processed late, from ``processed_at_ms`` on.

    Deterministic in (project_id, day, batch); new ``$insert_id``s, no odd cases, so each line is
    a distinct event that a re-export (or a ``where`` on ``mp_processing_time_ms``) must pick up.
    """
    _check(count, time_regime)
    rng = random.Random(f"{project_id}:{day.isoformat()}:late:{batch}")
    events = iter(_DayEvents(rng, project_id, day, timezone, time_regime))
    lines = []
    processed = processed_at_ms
    for _ in range(count):
        event = next(events)
        props = event["properties"]
        props["$mp_api_timestamp_ms"] = processed - 3 - int(rng.random() * 200)
        props["mp_processing_time_ms"] = processed
        if rng.random() < 0.5:  # offline mobile clients and /import backfills
            props["$import"] = True
        lines.append(orjson.dumps(event))
        processed += 1 + int(rng.random() * 25)
    return lines
