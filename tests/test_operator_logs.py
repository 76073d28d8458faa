"""What an operator reads in a run's event log: the project's module loggers reach it."""

import itertools
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from dagster import instance_for_test, materialize

from mixpanel_assets.pipeline import build_definitions
from mixpanel_assets.sandbox.local_sandbox import LocalSandbox

ROOT = Path(__file__).resolve().parents[1]


def test_module_loggers_reach_the_event_log_with_the_projects_instance_settings(
    sandbox: LocalSandbox,
) -> None:
    settings = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert "mixpanel_assets" in settings["python_logs"]["managed_python_loggers"]
    # A Catalog that ignores the batch list's tags filter: replay's logger says what it skipped.
    sandbox.platform.honours_tag_filter = False
    defs = build_definitions()
    days = [(datetime.now(UTC).date() - timedelta(days=n)).isoformat() for n in (2, 1)]
    with instance_for_test(overrides={"python_logs": settings["python_logs"]}) as instance:
        for day in days:
            result = materialize(
                [*defs.assets, *defs.asset_checks],
                partition_key=day,
                instance=instance,
                resources=defs.resources,
            )
            assert result.success
        messages = [entry.message for entry in instance.all_logs(result.run_id)]
    assert any(
        "not of this day, ignored" in message and f"/{days[0]}" in message for message in messages
    ), "replay's module logger did not reach the run's event log"


def test_a_slow_aep_batch_reports_its_progress_in_the_event_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mixpanel_assets.aep import day_batch
    from mixpanel_assets.sandbox.local_sandbox import local_sandbox

    # AEP takes 3 s to process the batch; the report interval is cut from 15 s to 0.5 s.
    monkeypatch.setattr(day_batch, "PROGRESS_SECONDS", 0.5)
    settings = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    day = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    with local_sandbox(tmp_path / "data", events_per_day=200, processing_seconds=3.0) as slow:
        for name, value in slow.environment().items():
            monkeypatch.setenv(name, value)
        defs = build_definitions()
        with instance_for_test(overrides={"python_logs": settings["python_logs"]}) as instance:
            result = materialize(
                [*defs.assets, *defs.asset_checks],
                partition_key=day,
                instance=instance,
                resources=defs.resources,
            )
            assert result.success
            logs = [
                (entry.timestamp, entry.message)
                for entry in instance.all_logs(result.run_id)
                if entry.step_key == "aep_ingested_batches"
            ]
    uploads = [message for _, message in logs if "uploading file 1 (" in message]
    assert uploads and re.search(r"\d (B|kB|MB|GB) so far", uploads[0]), uploads
    waits = [(when, message) for when, message in logs if "of processing" in message]
    assert len(waits) >= 3, waits  # the status when first seen, then again while it waits
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(waits)]
    assert max(gaps) < 2.5, "a long wait went silent"
