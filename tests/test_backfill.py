"""A backfill launched from the Dagster CLI and run by a real daemon, on the local sandbox."""

import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from mixpanel_assets.sandbox.local_sandbox import LocalSandbox
from mixpanel_assets.sandbox.mixpanel_emulator import MixpanelEmulator

REPO = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).with_name("dagster"))
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


def _backfill(
    env: dict[str, str], first: str, last: str, workspace: str = "workspace.yaml"
) -> None:
    command = [DAGSTER, "job", "backfill", "-w", workspace, "-j", "daily_ingestion_job"]
    command += ["--from", first, "--to", last, "--noprompt"]
    completed = subprocess.run(
        command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]


def _wait_for_runs(home: Path, expected: int, timeout: float = 420.0) -> list:
    deadline = time.monotonic() + timeout
    with DagsterInstance.from_config(str(home)) as instance:
        while time.monotonic() < deadline:
            runs = instance.get_runs(RunsFilter(tags={}))
            backfill_runs = [run for run in runs if "dagster/backfill" in run.tags]
            if len(backfill_runs) == expected and all(
                run.status in FINISHED for run in backfill_runs
            ):
                return backfill_runs
            time.sleep(2)
    raise AssertionError(f"the backfill did not finish in {timeout:.0f} s")


@contextmanager
def _daemon(env: dict[str, str], workspace: str) -> Iterator[None]:
    """The daemon runs the backfill alone: the schedule and sensor would add their own runs."""
    for kind, name in (("schedule", "daily_ingestion_schedule"), ("sensor", "late_events_sensor")):
        subprocess.run(
            [DAGSTER, kind, "stop", name, "-w", workspace],
            env=env,
            cwd=REPO,
            capture_output=True,
            check=True,
            timeout=120,
        )
    daemon = subprocess.Popen(
        [DAGSTER + "-daemon", "run", "-w", workspace],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        daemon.send_signal(signal.SIGINT)
        daemon.wait(timeout=60)


def _dagster_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    return home


@pytest.mark.timeout(600)
def test_a_30_day_backfill_needs_at_most_5_exports_and_lands_once(
    sandbox: LocalSandbox, tmp_path: Path
) -> None:
    home = _dagster_home(tmp_path)
    env = {**os.environ, **sandbox.environment(), "DAGSTER_HOME": str(home)}
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    first = yesterday - timedelta(days=29)
    _backfill(env, first.isoformat(), yesterday.isoformat())
    with _daemon(env, "workspace.yaml"):
        runs = _wait_for_runs(home, expected=30)
    assert [run.status for run in runs] == [DagsterRunStatus.SUCCESS] * 30
    exports = [entry for entry in sandbox.mixpanel.request_log if "where" not in entry.query]
    assert 0 < len(exports) <= 5
    assert all(entry.status == 200 for entry in sandbox.mixpanel.request_log)
    records = sandbox.platform.dataset_records(sandbox.dataset_id)
    days = {stamp[:10] for stamp in records["timestamp"]}
    assert len(days) == 30 and records["_id"].is_unique
    assert records["batch_id"].nunique() == 30
    expected = sum(
        1
        for offset in range(30)
        for _ in sandbox.mixpanel.events_for_day(first + timedelta(days=offset))
    )
    assert len(records) < expected, "duplicates and quarantined events are not loaded"


@pytest.mark.timeout(600)
def test_concurrent_backfills_share_the_rate_budget_and_see_no_429(
    sandbox: LocalSandbox, tmp_path: Path
) -> None:
    home = _dagster_home(tmp_path)
    workspace = tmp_path / "workspace.yaml"
    location = REPO / "tests" / "rate_limited_location.py"
    workspace.write_text(
        f"load_from:\n  - python_file:\n      relative_path: {location}\n"
        f"      working_directory: {REPO}\n"
    )
    with MixpanelEmulator(
        username=sandbox.environment()["MIXPANEL_SERVICE_ACCOUNT_USERNAME"],
        secret=sandbox.environment()["MIXPANEL_SERVICE_ACCOUNT_SECRET"],
        events_per_day=100,  # whole blocks of 100: exactly 1% quarantined, the default limit
        max_requests_per_second=1,
    ) as limited:
        env = {
            **os.environ,
            **sandbox.environment(),
            "MIXPANEL_EXPORT_URL": limited.export_url,
            "DAGSTER_HOME": str(home),
        }
        yesterday = datetime.now(UTC).date() - timedelta(days=1)
        middle = yesterday - timedelta(days=5)
        _backfill(
            env,
            (middle - timedelta(days=6)).isoformat(),
            (middle - timedelta(days=1)).isoformat(),
            str(workspace),
        )
        _backfill(env, middle.isoformat(), yesterday.isoformat(), str(workspace))
        with _daemon(env, str(workspace)):
            runs = _wait_for_runs(home, expected=12)
        log = limited.request_log
    assert [run.status for run in runs] == [DagsterRunStatus.SUCCESS] * 12
    assert [entry.status for entry in log] == [200] * 12, "one request a day, none refused"
    arrivals = sorted(entry.monotonic for entry in log)
    assert all(later - earlier >= 1.0 for earlier, later in itertools.pairwise(arrivals))
