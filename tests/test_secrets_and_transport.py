"""Credentials in URLs never reach an exception, a log or metadata; real endpoints are https."""

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mixpanel_assets.aep.resource import AEPResource
from mixpanel_assets.coordination import coordinator
from mixpanel_assets.errors import ConfigError
from mixpanel_assets.mixpanel.resource import MixpanelResource
from mixpanel_assets.redaction import redact_text, redact_url
from mixpanel_assets.sandbox.local_sandbox import LocalSandbox
from mixpanel_assets.storage import PartitionFiles
from tests.dagster_cli import materialize_command

SECRET = "hunter2-do-not-print"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://dagster@db.internal:5432/dagster?password={SECRET}&sslmode=require",
        f"postgresql://dagster:{SECRET}@db.internal:5432/dagster",
        f"https://proxy.example.com/export?token={SECRET}#{SECRET}",
        f"s3://bucket/prefix?secret={SECRET}",
    ],
)
def test_urls_lose_passwords_query_values_and_fragments(url: str) -> None:
    redacted = redact_url(url)
    assert SECRET not in redacted and "***" in redacted
    assert SECRET not in redact_text(f"could not reach {url}: timed out")


def test_harmless_url_parts_stay_readable() -> None:
    redacted = redact_url(f"postgresql://dagster@db:5432/dagster?sslmode=require&password={SECRET}")
    assert redacted.startswith("postgresql://dagster@db:5432/dagster?sslmode=require&password=")


def test_an_unreachable_coordination_url_hides_its_query_password() -> None:
    url = f"postgresql://dagster@127.0.0.1:1/nowhere?password={SECRET}"
    with pytest.raises(ConfigError, match="not reachable") as failed, coordinator(url).lock("x"):
        pass
    assert SECRET not in str(failed.value)
    assert "MIXPANEL_ASSETS_COORDINATION_URL" in str(failed.value)


def test_a_data_dir_with_credentials_is_redacted_in_errors() -> None:
    files = PartitionFiles(data_dir=f"nosuchfs://user:{SECRET}@bucket/x?key={SECRET}")
    with pytest.raises(ConfigError, match="MIXPANEL_ASSETS_DATA_DIR") as refused:
        files.asset_store("mixpanel_raw_events")
    assert SECRET not in str(refused.value)


def test_a_failed_run_leaves_the_password_nowhere(sandbox: LocalSandbox, tmp_path: Path) -> None:
    """stderr, stdout, the event log and the compute logs: every file of the Dagster home."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    day = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    environment = {
        **sandbox.environment(),
        "MIXPANEL_ASSETS_COORDINATION_URL": f"postgresql://u@127.0.0.1:1/x?password={SECRET}",
        "DAGSTER_HOME": str(home),
        "PATH": "/usr/bin:/bin",
    }
    completed = subprocess.run(
        materialize_command("mixpanel_raw_events", day),
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode != 0
    assert "MIXPANEL_ASSETS_COORDINATION_URL" in completed.stderr + completed.stdout
    assert SECRET not in completed.stderr + completed.stdout
    written = [path for path in home.rglob("*") if path.is_file()]
    assert written, "the run left its event log and compute logs in the Dagster home"
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("variable", ["AEP_IMS_URL", "AEP_PLATFORM_URL"])
def test_aep_endpoints_must_be_https_unless_loopback(variable: str) -> None:
    settings = {
        "client_id": "id",
        "client_secret": "secret",
        "org_id": "ORG@AdobeOrg",
        "dataset_id": "ds",
        "ims_url": "https://ims-na1.adobelogin.com",
        "platform_url": "https://platform.adobe.io",
    }
    field = "ims_url" if variable == "AEP_IMS_URL" else "platform_url"
    with pytest.raises(ConfigError, match=f"{variable}=.*plain http"):
        AEPResource(**{**settings, field: "http://platform.adobe.io"}).get_client()
    with pytest.raises(ConfigError, match=f"{variable}.*query string"):
        AEPResource(**{**settings, field: f"https://platform.adobe.io?token={SECRET}"}).get_client()
    for loopback in ("http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"):
        AEPResource(**{**settings, field: loopback}).get_client()


def test_the_mixpanel_export_url_must_be_https_unless_loopback() -> None:
    def resource(url: str) -> MixpanelResource:
        return MixpanelResource(
            project_id="1", service_account_username="u", service_account_secret="s", export_url=url
        )

    with pytest.raises(ConfigError, match=r"MIXPANEL_EXPORT_URL=.*plain http"):
        resource("http://data.mixpanel.com/api/2.0/export").get_client()
    with pytest.raises(ConfigError, match="MIXPANEL_EXPORT_URL") as refused:
        resource(f"https://proxy.example.com/export?token={SECRET}").get_client()
    assert SECRET not in str(refused.value)
    with pytest.raises(ConfigError, match="must not carry credentials") as refused:
        resource(f"https://u:{SECRET}@proxy.example.com/export").get_client()
    assert SECRET not in str(refused.value)
    assert (
        resource("http://127.0.0.1:9/export").resolved_export_url() == "http://127.0.0.1:9/export"
    )
