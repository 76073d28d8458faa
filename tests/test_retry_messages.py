"""Every retry of either HTTP client is logged: which request, why, after how long."""

import logging
import re
from pathlib import Path

import pytest

from mixpanel_assets import progress
from mixpanel_assets.aep.errors import AEPError
from mixpanel_assets.sandbox.platform_emulator import PlatformEmulator
from tests.platform_clients import emulator_client

SECRET = "retry-message-secret"


@pytest.mark.timeout(60)
def test_an_aep_retry_says_which_request_why_and_how_long_and_a_long_pause_keeps_talking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(progress, "PROGRESS_SECONDS", 0.5)
    caplog.set_level(logging.INFO, logger="mixpanel_assets.http_retry")
    with PlatformEmulator(tmp_path / "platform", client_secret=SECRET) as platform:
        platform.queue_fault("POST", "/ims/token/v3", 503, count=1, retry_after=3)
        client = emulator_client(platform, client_secret=SECRET, retry_base_seconds=0.01)
        with pytest.raises(AEPError):  # the token comes; the batch does not exist
            client.get_batch("no-such-batch")
    said = [record for record in caplog.records if record.name == "mixpanel_assets.http_retry"]
    retry, *pause = said
    assert retry.levelno == logging.WARNING
    assert re.fullmatch(
        r"POST /ims/token/v3: attempt 1 of \d+ failed \(HTTP 503\); trying again in 3\.0 s",
        retry.getMessage(),
    ), retry.getMessage()
    left = [record.getMessage() for record in pause]
    assert len(left) >= 3 and all(
        re.fullmatch(r"POST /ims/token/v3: \d s left before the next attempt", m) for m in left
    ), left
    assert SECRET not in caplog.text
