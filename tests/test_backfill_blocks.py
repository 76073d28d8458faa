"""Backfill blocks are exported once, whenever their runs come, and their staging goes away.

The backfill is recorded by the Dagster CLI in a real instance; its runs are then executed in
this process one at a time, as a daemon submitting them over many ticks would have them.
"""

import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from dagster import DagsterInstance, ExecuteInProcessResult, RunsFilter, materialize
from dagster._core.execution.backfill import BulkActionStatus

from mixpanel_assets.mixpanel.backfill_batching import BACKFILL_TAG
from mixpanel_assets.pipeline import build_definitions
from mixpanel_assets.sandbox.local_sandbox import LocalSandbox

REPO = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).with_name("dagster"))
FIRST = datetime.now(UTC).date() - timedelta(days=20)


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: LocalSandbox):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with DagsterInstance.get() as opened:
        yield opened


def _backfill(instance: DagsterInstance, first: date, last: date) -> str:
    command = [DAGSTER, "job", "backfill", "-w", "workspace.yaml", "-j", "daily_ingestion_job"]
    command += ["--from", first.isoformat(), "--to", last.isoformat(), "--noprompt"]
    done = subprocess.run(
        command, env=dict(os.environ), cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (backfill,) = instance.get_backfills()
    # The CLI queued every run at once; a daemon submits an asset backfill's over many ticks.
    # Here none is queued yet: the test runs them one at a time.
    for run in instance.get_runs(RunsFilter(tags={BACKFILL_TAG: backfill.backfill_id})):
        instance.delete_run(run.run_id)
    return backfill.backfill_id


def _run_day(instance: DagsterInstance, day: date, backfill_id: str) -> ExecuteInProcessResult:
    defs = build_definitions()
    result = materialize(
        defs.assets,
        selection="mixpanel_raw_events",
        partition_key=day.isoformat(),
        resources=defs.resources,
        instance=instance,
        tags={BACKFILL_TAG: backfill_id},
    )
    assert result.success
    return result


def _exports(sandbox: LocalSandbox) -> list[tuple[str, str]]:
    return [
        (entry.query["from_date"], entry.query["to_date"]) for entry in sandbox.mixpanel.request_log
    ]


def _staging(sandbox: LocalSandbox, backfill_id: str) -> Path:
    return sandbox.data_dir / "mixpanel_raw_events" / f".backfill-{backfill_id}"


@pytest.mark.timeout(300)
def test_a_block_is_exported_once_when_its_runs_come_one_by_one(
    sandbox: LocalSandbox, instance: DagsterInstance
) -> None:
    days = [FIRST + timedelta(days=offset) for offset in range(14)]
    backfill_id = _backfill(instance, days[0], days[-1])
    results = {}
    for day in days:  # each run submitted only after the one before has finished
        results[day] = _run_day(instance, day, backfill_id)
        assert _staging(sandbox, backfill_id).exists() == (day != days[-1])
    assert _exports(sandbox) == [
        (str(days[0]), str(days[6])),
        (str(days[7]), str(days[13])),
    ]
    # Each run says its day came from its block's shared export, in its log and its metadata.
    for day in (days[0], days[1], days[13]):
        block = f"backfill block {days[7 * (day >= days[7])]}..{days[6 + 7 * (day >= days[7])]}"
        (event,) = results[day].asset_materializations_for_node("mixpanel_raw_events")
        assert event.metadata["export_source"].value == block
        messages = [entry.user_message for entry in instance.all_logs(results[day].run_id)]
        assert any(f"took {day} from the shared export of {block}: " in m for m in messages)
        assert not any(m.startswith("exported ") for m in messages), messages


@pytest.mark.timeout(300)
def test_days_already_staged_are_not_exported_again(
    sandbox: LocalSandbox, instance: DagsterInstance
) -> None:
    days = [FIRST + timedelta(days=offset) for offset in range(7)]
    backfill_id = _backfill(instance, days[0], days[-1])
    _run_day(instance, days[0], backfill_id)
    staging = _staging(sandbox, backfill_id)
    for day in days[4:]:  # as if the export had died after staging the first four days
        (staging / f"{day}.summary.json").unlink()
    _run_day(instance, days[5], backfill_id)
    _run_day(instance, days[1], backfill_id)
    assert _exports(sandbox) == [(str(days[0]), str(days[6])), (str(days[4]), str(days[6]))]


@pytest.mark.timeout(300)
def test_an_ended_backfill_and_killed_runs_leave_nothing_behind(
    sandbox: LocalSandbox, instance: DagsterInstance
) -> None:
    days = [FIRST + timedelta(days=offset) for offset in range(7)]
    backfill_id = _backfill(instance, days[0], days[-1])
    _run_day(instance, days[0], backfill_id)
    staging = _staging(sandbox, backfill_id)
    assert staging.exists()
    (backfill,) = instance.get_backfills()
    instance.update_backfill(backfill.with_status(BulkActionStatus.CANCELED))

    raw = sandbox.data_dir / "mixpanel_raw_events"
    killed = raw / str(days[3]) / ".staging-0123abcd"  # a run killed while writing
    killed.mkdir(parents=True)
    (killed / "events.jsonl.gz").write_bytes(b"partial")
    hours_ago = time.time() - 7 * 3600
    os.utime(killed / "events.jsonl.gz", (hours_ago, hours_ago))
    fresh = raw / str(days[3]) / ".staging-fedc9876"  # a run writing right now
    fresh.mkdir()
    (fresh / "events.jsonl.gz").write_bytes(b"being written")

    defs = build_definitions()
    assert materialize(
        defs.assets,
        selection="mixpanel_raw_events",
        partition_key=days[3].isoformat(),
        resources=defs.resources,
        instance=instance,
    ).success
    assert not staging.exists()
    assert not killed.exists()
    assert fresh.exists()
