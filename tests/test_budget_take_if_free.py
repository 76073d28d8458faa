"""Taking a rate-budget slot only if one is free now, through files or PostgreSQL."""

import threading
import time
from pathlib import Path

import pytest

from mixpanel_assets.coordination import LocalCoordinator, coordinator
from mixpanel_assets.mixpanel.rate_budget import RateBudget


@pytest.fixture(params=["files", "postgres"])
def shared(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "files":
        return LocalCoordinator(tmp_path)
    return coordinator(request.getfixturevalue("postgres").create_database("take_if_free"))


@pytest.mark.timeout(60)
def test_a_busy_lock_is_not_waited_for(shared) -> None:
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with shared.update_state("budget"):
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        started = time.monotonic()
        with shared.try_update_state("budget") as state:
            assert state is None
        assert time.monotonic() - started < 5
    finally:
        release.set()
        holder.join()
    with shared.try_update_state("budget") as state:
        assert state is not None
        state.value = [1.0]
    with shared.update_state("budget") as state:
        assert state.value == [1.0]


def test_a_slot_is_taken_only_when_free_now(shared) -> None:
    now = [1_000_000.0]
    budget = RateBudget(shared, "budget", per_hour=2, clock=lambda: now[0], sleep=lambda _: None)
    assert budget.take_if_free() is None
    assert budget.take_if_free() is None
    wait = budget.take_if_free()
    assert wait is not None and 3599 < wait <= 3600.2  # the hour's two queries are spent
    now[0] += 3601
    assert budget.take_if_free() is None
    budget.reserve()  # a run queues behind it: the probe does not jump the queue
    assert budget.take_if_free() is not None
