"""The local coordinator's shared state: corrupt files fail loudly and reset nothing."""

import json
from pathlib import Path

import pytest

from mixpanel_assets.coordination import LocalCoordinator
from mixpanel_assets.errors import CorruptStateError
from mixpanel_assets.mixpanel.rate_budget import RateBudget


def test_a_corrupt_state_file_fails_naming_it_and_is_left_as_it_was(tmp_path: Path) -> None:
    shared = LocalCoordinator(tmp_path)
    budget = RateBudget(shared, "mixpanel-export-budget-1", per_hour=60, per_second=3)
    budget.reserve()
    state_file = tmp_path / "mixpanel-export-budget-1.json"
    assert len(json.loads(state_file.read_text())) == 1
    state_file.write_text("[1765000000.0, 17650")  # e.g. a disk that lost the end of it

    with pytest.raises(CorruptStateError) as refused:
        budget.reserve()
    assert str(state_file) in str(refused.value)
    assert "move the file aside" in str(refused.value)
    assert state_file.read_text() == "[1765000000.0, 17650", "nothing was reset"


def test_state_that_is_not_text_fails_too(tmp_path: Path) -> None:
    (tmp_path / "counter.json").write_bytes(b"\xff\xfe\x00garbage")
    with (
        pytest.raises(CorruptStateError, match=r"counter\.json"),
        LocalCoordinator(tmp_path).update_state("counter"),
    ):
        pass


def test_missing_state_starts_empty_and_is_saved(tmp_path: Path) -> None:
    shared = LocalCoordinator(tmp_path)
    with shared.update_state("counter") as state:
        assert state.value is None
        state.value = 1
    with shared.update_state("counter") as state:
        assert state.value == 1
    assert not list(tmp_path.glob("*.tmp")), "no temporary file is left behind"
