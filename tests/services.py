"""Real servers for the multi-machine tests: PostgreSQL from Debian's packages and an
S3-compatible server (moto in server mode), each on a free loopback port."""

from __future__ import annotations

import glob
import logging
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

POSTGRES_USER = "mixpanel_assets"
INSTALL_HINT = (
    "the PostgreSQL server binaries (initdb, pg_ctl) are not installed: "
    "apt-get install postgresql (.ci/run does it)"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A fresh, empty database; its URL."""
        import psycopg2

        connection = psycopg2.connect(self.url())
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cursor.execute(f'CREATE DATABASE "{name}"')
        connection.close()
        return self.url(name)


def _postgres_bin() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not candidates:
        raise RuntimeError(INSTALL_HINT)
    return Path(candidates[-1]).parent


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """initdb + pg_ctl start in a new temp folder (as the postgres user when running as root:
    PostgreSQL refuses to run as root); stopped and removed afterwards."""
    binaries = _postgres_bin()
    folder = Path(tempfile.mkdtemp(prefix="mixpanel-assets-postgres-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        run_as = ["runuser", "-u", "postgres", "--"]
        os.chown(folder, pwd.getpwnam("postgres").pw_uid, -1)
    try:
        with _running_postgres(binaries, folder, run_as) as server:
            yield server
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _running_postgres(binaries: Path, folder: Path, run_as: list[str]) -> Iterator[PostgresServer]:
    password = secrets.token_hex(12)
    password_file = folder / "password"
    password_file.write_text(password)
    if run_as:
        os.chown(password_file, pwd.getpwnam("postgres").pw_uid, -1)
    data = folder / "data"
    port = free_port()
    subprocess.run(
        [
            *run_as,
            str(binaries / "initdb"),
            "-D",
            str(data),
            "-U",
            POSTGRES_USER,
            "--auth=scram-sha-256",
            f"--pwfile={password_file}",
            "--no-sync",
            "--encoding=UTF8",
        ],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    log = folder / "server.log"
    pg_ctl = [*run_as, str(binaries / "pg_ctl"), "-D", str(data)]
    subprocess.run(
        [*pg_ctl, "-o", options, "-l", str(log), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield PostgresServer("127.0.0.1", port, POSTGRES_USER, password)
    finally:
        subprocess.run(
            [*pg_ctl, "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
        )


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str

    def environment(self) -> dict[str, str]:
        """What boto3/s3fs read to reach this server instead of AWS."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "mixpanel-assets-test",
            "AWS_SECRET_ACCESS_KEY": "mixpanel-assets-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """moto's S3-compatible server on loopback, with one empty bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        started = S3Server(f"http://127.0.0.1:{port}", "mixpanel-assets-data")
        environment = started.environment()
        boto3.client(
            "s3",
            endpoint_url=started.endpoint_url,
            aws_access_key_id=environment["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=environment["AWS_SECRET_ACCESS_KEY"],
            region_name=environment["AWS_DEFAULT_REGION"],
        ).create_bucket(Bucket=started.bucket)
        yield started
    finally:
        server.stop()
