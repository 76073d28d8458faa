"""One retry policy for both HTTP clients: Retry-After honoured, and capped, in each."""

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from mixpanel_assets.aep.errors import AEPError
from mixpanel_assets.http_retry import retry_after_header
from mixpanel_assets.mixpanel.export_client import ExportQuery, MixpanelExportClient
from mixpanel_assets.sandbox.mixpanel_emulator import Fault, MixpanelEmulator
from mixpanel_assets.sandbox.platform_emulator import PlatformEmulator
from tests.platform_clients import emulator_client

SECRET = "retry-test-secret"


@pytest.mark.timeout(60)
def test_mixpanel_retry_after_is_capped(tmp_path: Path) -> None:
    with MixpanelEmulator(username="u", secret="s", events_per_day=20) as emulator:
        emulator.queue_fault(Fault(kind="status", status=429, retry_after=3600))
        client = MixpanelExportClient(
            project_id=emulator.project_id,
            username="u",
            secret="s",
            export_url=emulator.export_url,
            retry_base_seconds=0.01,
            max_retry_after_seconds=0.5,
        )
        day = datetime.now(UTC).date() - timedelta(days=1)
        started = time.monotonic()
        summary = client.export_to_file(ExportQuery(day, day), tmp_path / "day.gz")
        waited = time.monotonic() - started
    assert summary.attempts == 2 and summary.line_count > 0
    assert 0.5 <= waited < 10, "waits the capped Retry-After, not Mixpanel's hour"


@pytest.mark.timeout(60)
def test_aep_retry_after_is_capped_and_exhaustion_names_the_call(tmp_path: Path) -> None:
    with PlatformEmulator(tmp_path / "platform", client_secret=SECRET) as platform:
        platform.queue_fault("POST", "/ims/token/v3", 503, count=3, retry_after=3600)
        client = emulator_client(
            platform,
            client_secret=SECRET,
            retry_base_seconds=0.01,
            max_attempts=3,
            max_retry_after_seconds=0.3,
        )
        started = time.monotonic()
        with pytest.raises(AEPError, match=r"access token .* after 3 attempts \(HTTP 503"):
            client.get_batch("no-such-batch")
        waited = time.monotonic() - started
    assert 0.6 <= waited < 10, "two capped pauses, not two hours"


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    assert retry_after_header({"Retry-After": "7"}) == 7.0
    assert retry_after_header({"Retry-After": "-3"}) == 0.0
    assert retry_after_header({}) is None
    assert retry_after_header({"Retry-After": "soon"}) is None
    in_a_minute = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    assert 55 <= retry_after_header({"Retry-After": in_a_minute}) <= 60
