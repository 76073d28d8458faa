"""While a day is mapped, the run's event log says how far it got."""

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import instance_for_test, materialize

from mixpanel_assets.pipeline import build_definitions
from mixpanel_assets.sandbox.local_sandbox import local_sandbox
from mixpanel_assets.xdm import assets as xdm_assets
from mixpanel_assets.xdm.day_mapping import DayMappingStats

PROGRESS = re.compile(
    r"mapping: ([\d,]+) of ([\d,]+) raw lines \(\d+%\): ([\d,]+) records written, "
    r"([\d,]+) quarantined, ([\d,]+) duplicates dropped"
)


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def test_mapping_reports_its_counts_while_it_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every chunk (about a thousand lines) is reported when the interval is cut to nothing.
    monkeypatch.setattr(xdm_assets, "PROGRESS_SECONDS", 0.0)
    day = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    with local_sandbox(tmp_path / "data", events_per_day=4000, processing_seconds=0.05) as started:
        for name, value in started.environment().items():
            monkeypatch.setenv(name, value)
        defs = build_definitions()
        with instance_for_test() as instance:
            result = materialize(
                [*defs.assets, *defs.asset_checks],
                partition_key=day,
                instance=instance,
                resources=defs.resources,
                selection=["mixpanel_raw_events", "xdm_experience_events"],
            )
            assert result.success
            messages = [
                entry.message
                for entry in instance.all_logs(result.run_id)
                if entry.step_key == "xdm_experience_events"
            ]
    (materialization,) = result.asset_materializations_for_node("xdm_experience_events")
    final = {key: value.value for key, value in materialization.metadata.items()}
    reports = [
        tuple(map(_number, match.groups())) for m in messages if (match := PROGRESS.search(m))
    ]
    assert len(reports) >= 3, messages
    assert [report[0] for report in reports] == sorted({report[0] for report in reports})
    lines, total, records, quarantined, duplicates = reports[-1]
    assert total == final["raw_lines"] and lines <= total
    assert records + quarantined + duplicates == lines
    assert records <= final["dagster/row_count"] and quarantined <= final["quarantined"]
    assert quarantined > 0 and duplicates > 0  # both are reported as they happen


def test_progress_is_reported_once_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xdm_assets, "PROGRESS_SECONDS", 0.2)
    said: list[str] = []
    report = xdm_assets.MappingProgress(said.append, 1000)
    stats = DayMappingStats()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # chunk after chunk, for one second
        stats.raw_lines += 1
        report(stats)
    assert 4 <= len(said) <= 5, said
