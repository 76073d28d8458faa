"""What an operator reads in a run's event log: the project's module loggers reach it."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

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
