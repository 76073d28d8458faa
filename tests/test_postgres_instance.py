"""A real PostgreSQL server as the Dagster instance's storage and as the coordinator that runs
on separate machines share: concurrent runs end to end, locks, the shared rate budget."""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, instance_for_test, materialize

from mixpanel_assets.coordination import STATE_TABLE, PostgresCoordinator, _lock_key, coordinator
from mixpanel_assets.errors import LockLostError
from mixpanel_assets.pipeline import build_definitions
from mixpanel_assets.sandbox.local_sandbox import LocalSandbox, local_sandbox
from mixpanel_assets.settings import ConfigError
from tests.dagster_cli import DAGSTER, materialize_command
from tests.services import PostgresServer

REPO = Path(__file__).resolve().parents[1]
ASSETS = ("mixpanel_raw_events", "xdm_experience_events", "aep_ingested_batches")


def _production_home(home: Path) -> None:
    """A Dagster home with deploy/dagster.yaml as shipped, but runs launched in this process
    (the Kubernetes run launcher needs a cluster; storage, run queue and pools are the same)."""
    config = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    config.pop("run_launcher")
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


def _postgres_variables(postgres: PostgresServer, database: str) -> dict[str, str]:
    return {
        "DAGSTER_POSTGRES_HOST": postgres.host,
        "DAGSTER_POSTGRES_PORT": str(postgres.port),
        "DAGSTER_POSTGRES_USER": postgres.user,
        "DAGSTER_POSTGRES_PASSWORD": postgres.password,
        "DAGSTER_POSTGRES_DB": database,
    }


def test_concurrent_runs_on_separate_workers_share_one_postgres_instance(
    sandbox: LocalSandbox,
    postgres: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    database_url = postgres.create_database("concurrent_runs")
    home = tmp_path / "dagster_home"
    _production_home(home)
    today = datetime.now(UTC).date()
    first, second = (today - timedelta(days=2)).isoformat(), (today - timedelta(days=1)).isoformat()
    environment = {
        **sandbox.environment(),
        **_postgres_variables(postgres, "concurrent_runs"),
        "MIXPANEL_ASSETS_COORDINATION_URL": database_url,
        "DAGSTER_HOME": str(home),
        "PATH": "/usr/bin:/bin",
    }

    def run(day: str, worker: int) -> subprocess.CompletedProcess[str]:
        """One run worker: its own process and scratch folder, the shared instance and files."""
        command = materialize_command("mixpanel_raw_events*", day)
        scratch = {"MIXPANEL_ASSETS_SCRATCH_DIR": str(tmp_path / f"worker-{worker}")}
        return subprocess.run(
            command, env={**environment, **scratch}, capture_output=True, text=True, timeout=300
        )

    # The deploy step README's "Deploying" names: the pool's limit set once, explicitly. Left to
    # the default_limit, the first steps of the pool race to create its row in PostgreSQL and
    # all but one fail (dagster-io/dagster#33552, open in 1.13.27).
    subprocess.run(
        [DAGSTER, "instance", "concurrency", "set", "mixpanel_export", "2"],
        env=environment,
        check=True,
        capture_output=True,
    )
    # Two days at once, and the second day twice: the day's lock lets one batch stay live.
    with ThreadPoolExecutor(max_workers=3) as workers:
        jobs = [
            workers.submit(run, day, index) for index, day in enumerate((first, second, second))
        ]
        completed = [job.result() for job in jobs]
    for process in completed:
        assert process.returncode == 0, process.stderr[-3000:]
        assert postgres.password not in process.stdout + process.stderr

    for name, value in _postgres_variables(postgres, "concurrent_runs").items():
        monkeypatch.setenv(name, value)
    with DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        runs = instance.get_runs()
        assert len(runs) == 3 and {run.status for run in runs} == {DagsterRunStatus.SUCCESS}
        for asset in ASSETS:
            materialized = instance.get_materialized_partitions(AssetKey(asset))
            assert {first, second} <= materialized, asset

    records = sandbox.platform.dataset_records(sandbox.dataset_id)
    assert records["_id"].is_unique
    live = set(records["batch_id"])
    assert len(live) == 2, "one live batch per day, the second day's earlier batch replaced"
    with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute(f"SELECT value FROM {STATE_TABLE}")
        (slots,) = cursor.fetchone()
    assert len(slots) == 3, "every export reserved its slot in the shared rate budget"


def test_a_lock_waits_for_its_holder_and_is_freed_when_the_holder_dies(
    postgres: PostgresServer,
) -> None:
    url = postgres.create_database("locks")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from mixpanel_assets.coordination import PostgresCoordinator\n"
            f"with PostgresCoordinator({url!r}).lock('aep_ingested_batches:1/2026-11-01'):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        acquired = threading.Event()

        def take_the_lock() -> None:
            with PostgresCoordinator(url).lock("aep_ingested_batches:1/2026-11-01"):
                acquired.set()

        waiter = threading.Thread(target=take_the_lock, daemon=True)
        waiter.start()
        assert not acquired.wait(2.0), "a second holder waits while the first holds the lock"
        with PostgresCoordinator(url).lock("aep_ingested_batches:1/2026-11-02"):
            pass  # another day's lock is free meanwhile
        os.kill(holder.pid, signal.SIGKILL)
        assert acquired.wait(30.0), "the lock is released when its holder's connection drops"
    finally:
        holder.kill()
        holder.wait()


def test_shared_state_updates_from_many_workers_are_never_lost(postgres: PostgresServer) -> None:
    shared = PostgresCoordinator(postgres.create_database("state"))

    def add_one(_: int) -> None:
        with shared.update_state("counter") as state:
            current = state.value or 0
            time.sleep(0.001)  # widen the window a lost update would need
            state.value = current + 1

    with ThreadPoolExecutor(max_workers=8) as workers:
        list(workers.map(add_one, range(80)))
    with shared.update_state("counter") as state:
        assert state.value == 80


def test_a_bad_coordination_url_names_the_variable_and_hides_the_password(
    postgres: PostgresServer,
) -> None:
    with pytest.raises(ConfigError, match="MIXPANEL_ASSETS_COORDINATION_URL") as refused:
        coordinator("mysql://user:hunter2@db/x")
    assert "hunter2" not in str(refused.value)
    unreachable = f"postgresql://{postgres.user}:hunter2@127.0.0.1:1/nowhere"
    with (
        pytest.raises(ConfigError, match="not reachable") as failed,
        coordinator(unreachable).lock("x"),
    ):
        pass
    assert "hunter2" not in str(failed.value) and "***" in str(failed.value)


def _lock_holder_pid(url: str, name: str) -> int | None:
    """The server process (session) that holds the advisory lock ``name``, if any."""
    key = _lock_key(name)
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND ((classid::bigint << 32) | objid::bigint) = %s",
            (key,),
        )
        row = cursor.fetchone()
    return row[0] if row else None


def _someone_else_can_take(url: str, name: str) -> bool:
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", (_lock_key(name),))
        (taken,) = cursor.fetchone()
    return taken  # the connection closes here, releasing it again


def test_a_lock_outlives_the_servers_idle_session_timeout(postgres: PostgresServer) -> None:
    """Hours of AEP polling leave the lock's connection idle: the heartbeat keeps it."""
    url = postgres.create_database("idle_locks")
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        connection.autocommit = True
        cursor.execute("ALTER DATABASE idle_locks SET idle_session_timeout = '1s'")
    name = "aep_ingested_batches:1/2026-11-01"
    with PostgresCoordinator(url, heartbeat_seconds=0.3).lock(name) as held:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            assert not _someone_else_can_take(url, name), "the lock was dropped while held"
            time.sleep(0.5)
        held.verify()
    assert _someone_else_can_take(url, name), "released at the end of the block"


def test_a_dropped_lock_is_taken_again_reported_and_never_fails_the_block_at_exit(
    postgres: PostgresServer,
) -> None:
    url = postgres.create_database("dropped_locks")
    name = "aep_ingested_batches:1/2026-11-02"
    with PostgresCoordinator(url, heartbeat_seconds=0.2).lock(name) as held:
        first = _lock_holder_pid(url, name)
        assert first is not None
        with psycopg2.connect(url) as admin, admin.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", (first,))
        deadline = time.monotonic() + 10
        while _lock_holder_pid(url, name) in (None, first) and time.monotonic() < deadline:
            time.sleep(0.1)
        second = _lock_holder_pid(url, name)
        assert second not in (None, first), "the holder reconnected and took the lock again"
        assert held.lost
        with pytest.raises(LockLostError, match="aep_ingested_batches:1/2026-11-02"):
            held.verify()
    # Leaving the block did not raise (the unlock of a dropped session is not an error).
    assert _lock_holder_pid(url, name) is None


def test_a_lock_taken_by_another_while_dropped_stays_theirs(postgres: PostgresServer) -> None:
    url = postgres.create_database("stolen_locks")
    name = "aep_ingested_batches:1/2026-11-03"
    with PostgresCoordinator(url, heartbeat_seconds=0.2).lock(name) as held:
        other = psycopg2.connect(url)
        try:
            with psycopg2.connect(url) as admin, admin.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", (_lock_holder_pid(url, name),))
            with other.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_lock(%s)", (_lock_key(name),))
            other_pid = other.get_backend_pid()
            time.sleep(1.0)
            assert held.lost and _lock_holder_pid(url, name) == other_pid
            with pytest.raises(LockLostError):
                held.verify()
        finally:
            other.close()


def test_verify_asks_the_server_now_not_at_the_next_heartbeat(postgres: PostgresServer) -> None:
    url = postgres.create_database("verified_locks")
    name = "aep_ingested_batches:1/2026-11-04"
    with PostgresCoordinator(url, heartbeat_seconds=3600).lock(name) as held:
        held.verify()  # held without a gap so far
        first = _lock_holder_pid(url, name)
        with psycopg2.connect(url) as admin, admin.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", (first,))
        time.sleep(0.2)
        with pytest.raises(LockLostError):
            held.verify()
        assert _lock_holder_pid(url, name) not in (None, first), "taken again at once"


def test_a_day_lock_lost_while_aep_processes_the_batch_never_fails_the_day(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's connection drops once its batch exists: the day still succeeds, one batch live."""
    url = postgres.create_database("lost_while_processing")
    day = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    with local_sandbox(tmp_path / "data", events_per_day=200, processing_seconds=3.0) as sandbox:
        for name, value in sandbox.environment().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("MIXPANEL_ASSETS_COORDINATION_URL", url)
        lock_name = f"aep_ingested_batches:{sandbox.mixpanel.project_id}/{day}"
        result, dropped = _run_day_dropping_its_lock(
            url,
            lock_name,
            day,
            ready=lambda: any(
                batch["status"] != "loading"
                for batch in sandbox.platform.batches(sandbox.dataset_id)
            ),
        )
        assert dropped, "the day's lock was dropped while AEP processed the batch"
        assert result.success, [
            str(event.step_failure_data.error)
            for event in result.all_events
            if event.is_step_failure
        ]
        assert len(set(sandbox.platform.dataset_records(sandbox.dataset_id)["batch_id"])) == 1


def test_a_waiter_whose_connection_drops_keeps_waiting(postgres: PostgresServer) -> None:
    url = postgres.create_database("dropped_waiters")
    name = "aep_ingested_batches:1/2026-11-05"
    acquired = threading.Event()
    holder = psycopg2.connect(url)
    try:
        with holder.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", (_lock_key(name),))

        def wait_for_the_lock() -> None:
            with PostgresCoordinator(url).lock(name):
                acquired.set()

        waiter = threading.Thread(target=wait_for_the_lock, daemon=True)
        waiter.start()
        waiting = None
        deadline = time.monotonic() + 10
        while waiting is None and time.monotonic() < deadline:
            with psycopg2.connect(url) as admin, admin.cursor() as cursor:
                cursor.execute(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                )
                row = cursor.fetchone()
                waiting = row[0] if row else None
            time.sleep(0.1)
        assert waiting is not None
        with psycopg2.connect(url) as admin, admin.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", (waiting,))
        time.sleep(3.0)  # the waiter reconnects (after 2 s) and waits again
        assert not acquired.is_set() and waiter.is_alive()
    finally:
        holder.close()
    assert acquired.wait(30), "the waiter took the lock once its holder let go"


def test_a_day_lock_lost_before_the_batch_is_created_creates_no_batch(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dropped while the run settles the day (another run could have loaded it meanwhile): the
    run fails before creating its batch, so two runs of the day can never both go live."""
    url = postgres.create_database("lost_while_settling")
    day = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    with local_sandbox(tmp_path / "data", events_per_day=200) as sandbox:
        for name, value in sandbox.environment().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("MIXPANEL_ASSETS_COORDINATION_URL", url)
        lock_name = f"aep_ingested_batches:{sandbox.mixpanel.project_id}/{day}"
        # The Catalog answers the day's batch list late (503, Retry-After 2 s): time to drop it.
        sandbox.platform.queue_fault("GET", "/data/foundation/catalog/batches", 503, retry_after=2)
        result, dropped = _run_day_dropping_its_lock(url, lock_name, day, ready=lambda: True)
        assert dropped and not result.success
        (failure,) = [event for event in result.all_events if event.is_step_failure]
        assert failure.step_key == "aep_ingested_batches"
        assert "was lost" in str(failure.step_failure_data.error)
        assert sandbox.platform.batches(sandbox.dataset_id) == [], "no batch was created"


def _run_day_dropping_its_lock(
    url: str, lock_name: str, day: str, ready: Callable[[], bool]
) -> tuple[Any, list[int]]:
    """Materialize ``day`` while a thread ends the session holding the day's lock, once it is
    held and ``ready()`` says so; the run's result and the backends ended."""
    dropped: list[int] = []
    stop = threading.Event()

    def drop() -> None:
        while not stop.wait(0.05):
            holder = _lock_holder_pid(url, lock_name)
            if holder and ready():
                with psycopg2.connect(url) as admin, admin.cursor() as cursor:
                    cursor.execute("SELECT pg_terminate_backend(%s)", (holder,))
                dropped.append(holder)
                return

    dropper = threading.Thread(target=drop, daemon=True)
    dropper.start()
    defs = build_definitions()
    try:
        with instance_for_test() as instance:
            result = materialize(
                [*defs.assets, *defs.asset_checks],
                partition_key=day,
                instance=instance,
                resources=defs.resources,
                raise_on_error=False,
            )
    finally:
        stop.set()
        dropper.join()
    return result, dropped
