"""Mixpanel's export query limits, shared by every process that uses the same coordinator.

The Raw Event Export API allows 60 queries an hour and 3 a second per project; going over earns
429s. Runs, retries and the late-events sensor's probes all draw from one budget: each query
reserves the earliest slot that keeps both windows under their limits, under the budget's lock
(a file on one machine, PostgreSQL across machines), and waits for it. Slots are handed out in
order, so a large backfill queues behind what came first instead of starting a storm of 429s.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mixpanel_assets.coordination import Coordinator

HOUR = 3600.0
SECOND = 1.0
# Requests reach Mixpanel a little later than they leave, not all equally late: keep a margin so
# that two queries a window apart here are still a window apart there.
MARGIN = 0.1
# The longest wait that keeps a query "free now": the per-second window's, never the hour's.
SECOND_WINDOW_WAIT = SECOND + MARGIN


class RateBudget:
    """One project's export query budget (per hour and per second), booked under a shared lock."""

    def __init__(
        self,
        coordinator: Coordinator,
        name: str,
        *,
        per_hour: int = 60,
        per_second: int = 3,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_hour < 1 or per_second < 1:
            raise ValueError(
                "the Mixpanel rate budget needs at least one query per hour and second"
            )
        self._coordinator = coordinator
        self._name = name
        self._limits = ((per_hour, HOUR), (per_second, SECOND))
        self._clock = clock
        self._sleep = sleep

    def wait_for_turn(self, on_wait: Callable[[float, float], None] | None = None) -> float:
        """Block until this process may send one query; returns the seconds waited.

        ``on_wait(slot, delay)`` hears of a wait (the slot in epoch seconds) before it begins.
        """
        slot = self.reserve()
        delay = slot - self._clock()
        if delay > 0:
            if on_wait is not None:
                on_wait(slot, delay)
            self._sleep(delay)
        return max(delay, 0.0)

    def reserve(self) -> float:
        """Book the next free slot (epoch seconds) and return it."""
        with self._coordinator.update_state(self._name) as state:
            now = self._clock()
            slots = _recent(state.value, now)
            slot = self._earliest(now, slots)
            state.value = [*slots, slot]
        return slot

    def take_if_free(self, within_seconds: float = 0.0) -> float | None:
        """Book a slot only if one is free within ``within_seconds`` (then wait for it).

        It never waits for the budget's lock or for the hourly window. None when a slot was
        booked; else the seconds until one may be (queued bookings of runs come first).
        """
        with self._coordinator.try_update_state(self._name) as state:
            if state is None:
                return SECOND  # another process is booking this very moment
            now = self._clock()
            slots = _recent(state.value, now)
            slot = self._earliest(now, slots)
            if slot - now > within_seconds:
                return slot - now
            state.value = [*slots, slot]
        if slot > now:
            self._sleep(slot - now)
        return None

    def _earliest(self, now: float, slots: list[float]) -> float:
        """The earliest slot after every booked one that keeps both windows under their limits."""
        slot = max([now, *slots])
        moved = True
        while moved:
            moved = False
            for limit, window in self._limits:
                recent = [earlier for earlier in slots if earlier > slot - window]
                if len(recent) >= limit:
                    slot = recent[-limit] + window + MARGIN
                    moved = True
        return slot


def _recent(value: list[float] | None, now: float) -> list[float]:
    return sorted(slot for slot in value or [] if slot > now - HOUR)
