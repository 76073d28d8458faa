"""Locks and small shared state for runs that may be on different machines.

One machine: lock files under ``$DAGSTER_HOME``; several: advisory locks in the PostgreSQL
database of MIXPANEL_ASSETS_COORDINATION_URL, kept through keepalives and a heartbeat and taken
again after a reconnect (``HeldLock.verify`` reports the gap). Both release a lock when its holder
dies. Design notes: docs/deploying.md ("Locks held through long AEP waits").
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from mixpanel_assets.errors import ConfigError, CorruptStateError, LockLostError
from mixpanel_assets.file_lock import exclusive_lock
from mixpanel_assets.redaction import redact_text, redact_url

logger = logging.getLogger(__name__)

COORDINATION_VARIABLE = "MIXPANEL_ASSETS_COORDINATION_URL"
STATE_TABLE = "mixpanel_assets_shared_state"
_CONNECT_TIMEOUT_SECONDS = 10
# A held lock's connection: a query this often keeps idle-session timeouts and proxies from
# closing it; TCP keepalives keep NATs open and find a dead peer within about a minute.
HEARTBEAT_SECONDS = 30.0
_WAIT_RECONNECTS = 5  # connections dropped in a row while waiting for a lock, before failing
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,  # milliseconds unacknowledged data may wait: then it is dead
}


@dataclass
class SharedState:
    """A JSON value every run sees; ``None`` until a run first sets it."""

    value: Any = None


class HeldLock:
    """A lock being held; ``verify`` says whether it was held without a gap so far."""

    def __init__(self, name: str, probe: Callable[[], None] | None = None) -> None:
        self.name = name
        self._lost_at: float | None = None
        self._probe = probe

    @property
    def lost(self) -> bool:
        """True once the lock was lost, even if it was taken again since."""
        return self._lost_at is not None

    def mark_lost(self) -> None:
        """Note that the lock was lost (the first time only)."""
        if self._lost_at is None:
            self._lost_at = time.time()

    def verify(self) -> None:
        """Raise ``LockLostError`` if another holder may have had the lock meanwhile."""
        if self._probe is not None:
            self._probe()  # asks the server now, not at the next heartbeat
        if self._lost_at is not None:
            raise LockLostError(
                f"the lock {self.name!r} was lost (its connection to the coordination database "
                "dropped), so another run may have held it meanwhile; run this again."
            )


class Coordinator(Protocol):
    """Locks and shared state by name, on one machine or across many."""

    def lock(self, name: str) -> AbstractContextManager[HeldLock]:
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
    def lock(self, name: str) -> Iterator[HeldLock]:
        # An flock lives as long as its holder's process: it is never lost while held.
        """Hold the lock ``name`` for the block; other holders of the name wait."""
        with exclusive_lock(self._folder / f"{_file_name(name)}.lock"):
            yield HeldLock(name)

    @contextmanager
    def update_state(self, name: str) -> Iterator[SharedState]:
        """Read the state ``name`` under its lock; what the block leaves in it is saved."""
        path = self._folder / f"{_file_name(name)}.json"
        with self.lock(name):
            state = SharedState(_read_state_file(path))
            yield state
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            with open(temporary, "w", encoding="utf-8") as written:
                written.write(json.dumps(state.value))
                written.flush()
                os.fsync(written.fileno())  # a crash leaves the old state or the new, never half
            os.replace(temporary, path)

    @contextmanager
    def try_update_state(self, name: str) -> Iterator[SharedState | None]:
        """``update_state`` if its lock is free now, else ``None`` at once (never waits)."""
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

    def __init__(self, url: str, *, heartbeat_seconds: float = HEARTBEAT_SECONDS) -> None:
        self._url = url
        self._table_ready = False
        self._heartbeat_seconds = heartbeat_seconds

    @contextmanager
    def lock(self, name: str) -> Iterator[HeldLock]:
        # A session lock on a connection of its own: released by unlock or when the holder's
        # connection drops, so a killed run never leaves a day locked. A heartbeat keeps the
        # connection alive while the block waits (hours, for an AEP batch) and takes the lock
        # again if the connection dropped anyway.
        """Hold the lock ``name`` for the block; other holders of the name wait."""
        session = _LockSession(self, name)
        session.acquire()
        try:
            yield session.held
        finally:
            session.release()

    @contextmanager
    def update_state(self, name: str) -> Iterator[SharedState]:
        """Read the state ``name`` under its lock; what the block leaves in it is saved."""
        with self._connection() as connection, connection.cursor() as cursor:
            connection.autocommit = False
            self._ensure_table(cursor)
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(name),))
            state = _read_state(cursor, name)
            yield state
            _write_state(cursor, name, state)
            connection.commit()
            self._table_ready = True  # only once committed: a rolled-back block undoes it

    @contextmanager
    def try_update_state(self, name: str) -> Iterator[SharedState | None]:
        """``update_state`` if its lock is free now, else ``None`` at once (never waits)."""
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
            state = _read_state(cursor, name)
            yield state
            _write_state(cursor, name, state)
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
        connection = self.connect()
        try:
            yield connection
        finally:
            connection.close()

    def connect(self) -> Any:
        """A new autocommit connection with keepalives; unreachable names the variable."""
        import psycopg2  # the `postgres` extra; only deployments that coordinate through it

        try:
            connection = psycopg2.connect(
                self._url, connect_timeout=_CONNECT_TIMEOUT_SECONDS, **_KEEPALIVES
            )
        except psycopg2.Error as problem:
            # libpq names host and port, never the password; both texts are redacted anyway.
            raise ConfigError(
                f"{COORDINATION_VARIABLE}={redact_url(self._url)} is not reachable: "
                f"{redact_text(str(problem).strip())}"
            ) from None
        connection.autocommit = True
        return connection

    @property
    def heartbeat_seconds(self) -> float:
        """Seconds between the heartbeat queries of a held lock's connection."""
        return self._heartbeat_seconds

    @property
    def url(self) -> str:
        """The PostgreSQL URL (with its password: never log it)."""
        return self._url


class _LockSession:
    """One advisory lock on its own connection, kept alive by a heartbeat thread."""

    def __init__(self, owner: PostgresCoordinator, name: str) -> None:
        self._owner = owner
        self._key = _lock_key(name)
        self.held = HeldLock(name, probe=self._check_now)
        self._connection: Any = None
        self._holding = False
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"lock-heartbeat-{name}", daemon=True
        )

    def acquire(self) -> None:
        """Wait for the lock, behind a run that may hold it for hours.

        A connection dropped while waiting is made again, a few times in a row at most.
        """
        import psycopg2

        for attempt in range(1, _WAIT_RECONNECTS + 1):
            self._connection = self._owner.connect()
            try:
                with self._connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_lock(%s)", (self._key,))
                break
            except psycopg2.OperationalError as problem:
                self._close()
                if attempt == _WAIT_RECONNECTS:
                    raise ConfigError(
                        f"{COORDINATION_VARIABLE}={redact_url(self._owner.url)} dropped the "
                        f"connection {attempt} times while waiting for the lock "
                        f"{self.held.name!r}: {redact_text(str(problem).strip())}"
                    ) from None
                time.sleep(min(2.0**attempt, 30.0))
            except BaseException:
                self._close()
                raise
        self._holding = True
        self._thread.start()

    def release(self) -> None:
        """Unlock and close; a connection already gone has released the lock itself."""
        self._stop.set()
        self._thread.join()
        with self._mutex:
            if self._connection is None:
                return
            try:
                if self._holding:
                    with self._connection.cursor() as cursor:
                        cursor.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
            except Exception as problem:  # the server frees it with the session
                logger.warning(
                    "could not unlock %r (%s): its session's end frees it",
                    self.held.name,
                    redact_text(str(problem).strip()),
                )
            finally:
                self._close()

    def _beat(self) -> None:
        while not self._stop.wait(self._owner.heartbeat_seconds):
            self._check_now()

    def _check_now(self) -> None:
        """Ask the server whether the session (and so the lock) is still there; if it is not,
        record the loss and take the lock again when it is free."""
        with self._mutex:
            if self._holding and self._alive():
                return
            if self._holding:
                self._holding = False
                self.held.mark_lost()
                logger.warning(
                    "lost the lock %r: its connection dropped; taking it again", self.held.name
                )
            self._retake()

    def _alive(self) -> bool:
        try:
            with self._connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            return True
        except Exception:  # any failure means the session (and lock) is gone
            self._close()
            return False

    def _retake(self) -> None:
        """Reconnect and take the lock if it is free now; otherwise try at the next beat."""
        try:
            if self._connection is None:
                self._connection = self._owner.connect()
            with self._connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", (self._key,))
                self._holding = bool(cursor.fetchone()[0])
        except Exception as problem:  # the next beat tries again
            logger.warning(
                "could not take the lock %r again yet: %s",
                self.held.name,
                redact_text(str(problem).strip()),
            )
            self._close()

    def _close(self) -> None:
        if self._connection is not None:
            with suppress(Exception):
                self._connection.close()
            self._connection = None


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


def _read_state_file(path: Path) -> Any:
    """The JSON in ``path``, None when there is none; anything unreadable fails naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as problem:
        raise CorruptStateError(_corrupt_state_message(path, problem)) from None
    try:
        return json.loads(text)
    except ValueError as problem:
        raise CorruptStateError(_corrupt_state_message(path, problem)) from None


def _corrupt_state_message(path: Path, problem: Exception) -> str:
    return (
        f"the shared state file {path} cannot be read ({problem}). It holds what runs share "
        "(e.g. the Mixpanel queries already spent this hour), so runs stop rather than start "
        "again from nothing. Check the disk, then move the file aside: the next run starts a "
        "fresh state (and may meet Mixpanel's rate limit for up to an hour)."
    )


def _lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _read_state(cursor: Any, name: str) -> SharedState:
    cursor.execute(f"SELECT value FROM {STATE_TABLE} WHERE name = %s", (name,))
    row = cursor.fetchone()
    return SharedState(row[0] if row else None)


def _write_state(cursor: Any, name: str, state: SharedState) -> None:
    cursor.execute(
        f"INSERT INTO {STATE_TABLE} (name, value) VALUES (%s, %s) "
        "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
        (name, json.dumps(state.value)),
    )
