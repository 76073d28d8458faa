"""Locks and small shared state for runs that may be on different machines.

Runs of one project must share Mixpanel's rate budget, take turns on a day's AEP batch and share
a backfill block's export. On one machine a folder of lock files does that (the default, under
``$DAGSTER_HOME``); once runs go to separate containers or pods, MIXPANEL_ASSETS_COORDINATION_URL
points every run at one PostgreSQL database (the Dagster instance's own will do) and the same
locks become advisory locks there. Both kinds release a lock when its holder dies.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from mixpanel_assets.errors import ConfigError
from mixpanel_assets.file_lock import exclusive_lock

COORDINATION_VARIABLE = "MIXPANEL_ASSETS_COORDINATION_URL"
STATE_TABLE = "mixpanel_assets_shared_state"
_CONNECT_TIMEOUT_SECONDS = 10


@dataclass
class SharedState:
    """A JSON value every run sees; ``None`` until a run first sets it."""

    value: Any = None


class Coordinator(Protocol):
    def lock(self, name: str) -> AbstractContextManager[None]:
        """Hold the lock ``name`` for the block; other holders of the name wait."""
        ...

    def update_state(self, name: str) -> AbstractContextManager[SharedState]:
        """Read the state ``name`` under its lock; what the block leaves in it is saved."""
        ...

    def try_update_state(self, name: str) -> AbstractContextManager[SharedState | None]:
        """``update_state`` if its lock is free now, else ``None`` at once (never waits)."""
        ...


class LocalCoordinator:
    """Lock files and JSON files in one folder: every process on this machine sees them."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        with exclusive_lock(self._folder / f"{_file_name(name)}.lock"):
            yield

    @contextmanager
    def update_state(self, name: str) -> Iterator[SharedState]:
        path = self._folder / f"{_file_name(name)}.json"
        with self.lock(name):
            try:
                state = SharedState(json.loads(path.read_text(encoding="utf-8")))
            except (FileNotFoundError, ValueError):
                state = SharedState()
            yield state
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(state.value), encoding="utf-8")
            os.replace(temporary, path)

    @contextmanager
    def try_update_state(self, name: str) -> Iterator[SharedState | None]:
        lock_path = self._folder / f"{_file_name(name)}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            path = self._folder / f"{_file_name(name)}.json"
            try:
                state = SharedState(json.loads(path.read_text(encoding="utf-8")))
            except (FileNotFoundError, ValueError):
                state = SharedState()
            yield state
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(state.value), encoding="utf-8")
            os.replace(temporary, path)


class PostgresCoordinator:
    """Advisory locks and a small table in PostgreSQL: every machine that reaches it sees them."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._table_ready = False

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        # A session lock on a connection of its own: released by unlock or when the holder's
        # connection drops, so a killed run never leaves a day locked.
        with self._connection() as connection, connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", (_lock_key(name),))
            try:
                yield
            finally:
                cursor.execute("SELECT pg_advisory_unlock(%s)", (_lock_key(name),))

    @contextmanager
    def update_state(self, name: str) -> Iterator[SharedState]:
        with self._connection() as connection, connection.cursor() as cursor:
            connection.autocommit = False
            self._ensure_table(cursor)
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(name),))
            cursor.execute(f"SELECT value FROM {STATE_TABLE} WHERE name = %s", (name,))
            row = cursor.fetchone()
            state = SharedState(row[0] if row else None)
            yield state
            cursor.execute(
                f"INSERT INTO {STATE_TABLE} (name, value) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                (name, json.dumps(state.value)),
            )
            connection.commit()
            self._table_ready = True  # only once committed: a rolled-back block undoes it

    @contextmanager
    def try_update_state(self, name: str) -> Iterator[SharedState | None]:
        with self._connection() as connection, connection.cursor() as cursor:
            connection.autocommit = False
            # The table's creation lock too is only tried: a first update elsewhere holds it.
            names = [name] if self._table_ready else [STATE_TABLE, name]
            for locked in names:
                cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", (_lock_key(locked),))
                if not cursor.fetchone()[0]:
                    connection.rollback()
                    yield None
                    return
                if locked == STATE_TABLE:
                    cursor.execute(
                        f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} "
                        "(name text PRIMARY KEY, value jsonb)"
                    )
            cursor.execute(f"SELECT value FROM {STATE_TABLE} WHERE name = %s", (name,))
            row = cursor.fetchone()
            state = SharedState(row[0] if row else None)
            yield state
            cursor.execute(
                f"INSERT INTO {STATE_TABLE} (name, value) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                (name, json.dumps(state.value)),
            )
            connection.commit()
            self._table_ready = True

    def _ensure_table(self, cursor: Any) -> None:
        """Create the state table once; under a lock, as CREATE ... IF NOT EXISTS run by two
        sessions at once can still collide in PostgreSQL's catalog."""
        if self._table_ready:
            return
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(STATE_TABLE),))
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (name text PRIMARY KEY, value jsonb)"
        )

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        import psycopg2  # the `postgres` extra; only deployments that coordinate through it

        try:
            connection = psycopg2.connect(self._url, connect_timeout=_CONNECT_TIMEOUT_SECONDS)
        except psycopg2.Error as problem:
            # libpq's message names host and port, never the password; the URL is redacted.
            raise ConfigError(
                f"{COORDINATION_VARIABLE}={redact_url(self._url)} is not reachable: "
                f"{str(problem).strip()}"
            ) from None
        connection.autocommit = True
        try:
            yield connection
        finally:
            connection.close()


def coordinator(url: str, local_folder: str = "") -> Coordinator:
    """The coordinator a URL names: empty for this machine's folder, else a PostgreSQL URL.

    The local folder is ``local_folder`` or ``$DAGSTER_HOME/mixpanel_assets`` (the temp dir
    when there is no DAGSTER_HOME), so that every run of one Dagster instance meets there.
    """
    if not url.strip():
        folder = local_folder or os.environ.get("DAGSTER_HOME") or tempfile.gettempdir()
        return LocalCoordinator(Path(folder) / "mixpanel_assets")
    scheme = urlsplit(url).scheme
    if scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            f"{COORDINATION_VARIABLE}={redact_url(url)} is not a PostgreSQL URL: give "
            "postgresql://user:password@host:5432/database, or leave it empty to coordinate "
            "through files on this machine."
        )
    return PostgresCoordinator(url)


def redact_url(url: str) -> str:
    """``url`` with any password replaced, fit for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)
