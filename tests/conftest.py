"""Shared fixtures: a clean environment and the local sandbox on loopback."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from mixpanel_assets.sandbox.local_sandbox import LocalSandbox, local_sandbox
from tests.services import PostgresServer, S3Server, postgres_server, s3_server

# Every test's HTTP exchanges are checked against the vendors' API documents.
pytest_plugins = ["tests.contract.plugin"]

CONTRACT_VARIABLES = (
    "MIXPANEL_PROJECT_ID",
    "MIXPANEL_SERVICE_ACCOUNT_USERNAME",
    "MIXPANEL_SERVICE_ACCOUNT_SECRET",
    "MIXPANEL_REGION",
    "MIXPANEL_EXPORT_URL",
    "MIXPANEL_PROJECT_TIMEZONE",
    "MIXPANEL_EVENT_TIME",
    "MIXPANEL_START_DATE",
    "AEP_IMS_URL",
    "AEP_PLATFORM_URL",
    "AEP_CLIENT_ID",
    "AEP_CLIENT_SECRET",
    "AEP_ORG_ID",
    "AEP_SANDBOX_NAME",
    "AEP_SCOPES",
    "AEP_DATASET_ID",
    "AEP_TENANT_ID",
    "AEP_UPLOAD_FILE_MAX_BYTES",
    "MIXPANEL_ASSETS_DATA_DIR",
    "MIXPANEL_ASSETS_MAPPING",
    "MIXPANEL_ASSETS_MAPPING_WORKERS",
    "MIXPANEL_ASSETS_SETTLE_MINUTES",
    "MIXPANEL_ASSETS_LATE_DAYS",
    "MIXPANEL_ASSETS_LATE_CHECK_MINUTES",
    "MIXPANEL_ASSETS_LATE_MAX_RERUNS",
    "MIXPANEL_ASSETS_INTRADAY_MINUTES",
    "MIXPANEL_ASSETS_PROJECTS",
    "MIXPANEL_ASSETS_OWNERS",
    "MIXPANEL_ASSETS_SCRATCH_DIR",
    "MIXPANEL_ASSETS_COORDINATION_URL",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's own Mixpanel or AEP settings."""
    for name in CONTRACT_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalSandbox]:
    """Both emulators, with the contract's variables pointing at them."""
    with local_sandbox(tmp_path / "data", events_per_day=300, processing_seconds=0.05) as started:
        for name, value in started.environment().items():
            monkeypatch.setenv(name, value)
        yield started


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the whole session (each test makes its own database)."""
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """An S3-compatible server (moto) with one bucket, for the whole session."""
    with s3_server() as server:
        yield server


# Tests that start the local sandbox, a Dagster run, PostgreSQL or S3 are the slow, integrated
# part of the suite; `make test-fast` leaves them out (`-m "not integration"`).
INTEGRATION_FIXTURES = frozenset({"sandbox", "postgres", "s3"})
INTEGRATION_MODULES = frozenset(
    {
        "test_backfill",
        "test_pipeline",
        "test_aep_exactly_once",
        "test_object_storage",
        "test_postgres_instance",
        "test_dg_cli",
        "test_xdm_checks",
        "test_intraday",
        "test_intraday_recovery",
        "test_projects_pipeline",
        "test_export_progress",
        "test_operator_logs",
        "test_readable_metadata",
        "test_quiet_runs",
        "test_mapping_progress",
        "test_dagster_dev_message",
        "test_retry_messages",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        fixtures = set(getattr(item, "fixturenames", ()))
        if module in INTEGRATION_MODULES or fixtures & INTEGRATION_FIXTURES:
            item.add_marker(pytest.mark.integration)
