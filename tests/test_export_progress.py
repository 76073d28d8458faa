"""An export says what it is doing in the run's event log: budget waits, retries, progress."""

import itertools
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from dagster import instance_for_test, materialize

from mixpanel_assets import progress
from mixpanel_assets.coordination import coordinator
from mixpanel_assets.mixpanel.rate_budget import HOUR, RateBudget
from mixpanel_assets.pipeline import build_definitions
from mixpanel_assets.sandbox.local_sandbox import local_sandbox
from mixpanel_assets.sandbox.mixpanel_emulator import Fault
from tests.slow_relay import SlowRelay

ROOT = Path(__file__).resolve().parents[1]
INTERVAL = 0.5  # the test's report interval; production's is PROGRESS_SECONDS
ISO_UTC = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z"


def test_reports_come_every_15_seconds() -> None:
    from mixpanel_assets.aep import day_batch, increments
    from mixpanel_assets.xdm import assets as xdm_assets

    assert progress.PROGRESS_SECONDS == 15.0  # one cadence, imported by every long step
    assert day_batch.PROGRESS_SECONDS is increments.PROGRESS_SECONDS is progress.PROGRESS_SECONDS
    assert xdm_assets.PROGRESS_SECONDS is progress.PROGRESS_SECONDS


@pytest.mark.timeout(120)
def test_a_slow_export_reports_budget_waits_retries_and_progress_in_the_event_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress, "PROGRESS_SECONDS", INTERVAL)
    settings = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    day = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    home = tmp_path / "home"
    with local_sandbox(tmp_path / "data", events_per_day=400) as sandbox:
        environment = sandbox.environment()
        # Mixpanel answers 503 once, then trickles the day through a slow link.
        sandbox.mixpanel.queue_fault(Fault(kind="status", status=503))
        with SlowRelay(environment["MIXPANEL_EXPORT_URL"], pause_seconds=0.1) as relay:
            for name, value in {**environment, "MIXPANEL_EXPORT_URL": relay.url}.items():
                monkeypatch.setenv(name, value)
            defs = build_definitions()
            _spend_the_hour(home, environment["MIXPANEL_PROJECT_ID"])
            overrides = {"python_logs": settings["python_logs"]}
            with instance_for_test(overrides=overrides, temp_dir=str(home)) as instance:
                result = materialize(
                    [*defs.assets, *defs.asset_checks],
                    selection="mixpanel_raw_events",
                    partition_key=day,
                    instance=instance,
                    resources=defs.resources,
                )
                assert result.success
                (event,) = result.asset_materializations_for_node("mixpanel_raw_events")
                logs = [
                    (entry.timestamp, entry.user_message)
                    for entry in instance.all_logs(result.run_id)
                    if entry.step_key == "mixpanel_raw_events" and entry.user_message
                ]
    messages = [message for _, message in logs]
    export = f"Mixpanel export {day}..{day}"
    assert any(
        re.fullmatch(
            rf"{export}: attempt 1 of 5 waits for Mixpanel's rate budget until "
            rf"{ISO_UTC} \(\d+ s\)",
            message,
        )
        for message in messages
    ), messages
    assert any("still waits for Mixpanel's rate budget until" in m for m in messages), messages
    (retry,) = [m for m in messages if "trying again in" in m]
    assert retry.startswith(f"{export}: attempt 1 of 5 failed (HTTP 503"), retry
    assert any(f"{export}: attempt 2 of 5 started" in m for m in messages)
    counts = [
        int(found.group(1))
        for m in messages
        if (found := re.search(r"attempt 2 of 5: (\d+) events, [\d.]+ [kM]?B received", m))
    ]
    assert len(counts) >= 3 and counts == sorted(counts) and counts[0] < counts[-1], counts
    assert any(re.search(r"exported 400 events \([\d.]+ [kM]B\)", m) for m in messages), messages
    # Nothing silent from the first word of the export to its last.
    first = next(i for i, m in enumerate(messages) if "attempt 1 of 5 started" in m)
    last = next(i for i, m in enumerate(messages) if m.startswith("exported 400 events"))
    spoken = [when for when, _ in logs[first : last + 1]]
    gaps = [later - earlier for earlier, later in itertools.pairwise(spoken)]
    assert spoken[-1] - spoken[0] > 6 * INTERVAL and max(gaps) < 5 * INTERVAL, gaps
    # The materialization reads as people read: ISO UTC times, sizes with units.
    metadata = {key: value.value for key, value in event.metadata.items()}
    assert metadata["dagster/row_count"] == 400
    assert re.fullmatch(r"[\d.]+ kB of JSON lines, [\d.]+ kB stored \(gzip\)", metadata["size"])
    assert metadata["uncompressed_bytes"] > metadata["stored_bytes"] > 0
    for key in ("min_event_time", "max_event_time", "exported_at"):
        assert re.fullmatch(ISO_UTC, metadata[key]), (key, metadata[key])
    # The watermark keeps Mixpanel's millisecond.
    assert re.fullmatch(ISO_UTC[:-1] + r"\.\d{3}Z", metadata["watermark_processing_time"])
    watermark = datetime.fromisoformat(metadata["watermark_processing_time"])
    assert round(watermark.timestamp() * 1000) == metadata["watermark_processing_time_ms"]
    assert metadata["export_source"] == "own request" and metadata["export_attempts"] == 2


def _spend_the_hour(home: Path, project_id: str) -> None:
    """Someone else spent the hour's 60 queries almost an hour ago: a run waits a few seconds."""
    spent_at = time.time() - HOUR + 6
    other = RateBudget(
        coordinator("", str(home)),
        f"mixpanel-export-budget-{project_id}",
        per_second=100,
        clock=lambda: spent_at,
    )
    for _ in range(60):
        other.reserve()
