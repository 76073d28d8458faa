"""A normal run says nothing alarming: no warning on stderr, none in the run's event log."""

import logging
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import DagsterInstance, instance_for_test, materialize

from mixpanel_assets.pipeline import build_definitions
from mixpanel_assets.sandbox.local_sandbox import LocalSandbox
from mixpanel_assets.xdm.spec import DEFAULT_MAPPING_FILE, MAPPING_VARIABLE
from tests.dagster_cli import materialize_command

# Dagster's own notice that `dagster asset materialize` (the contract's command) has a successor.
DAGSTERS_CLI_NOTICE = "SupersessionWarning: Function `asset_materialize_command` is superseded"


def _yesterday() -> str:
    return (datetime.now(UTC).date() - timedelta(days=1)).isoformat()


def test_a_normal_day_prints_no_warning_and_logs_none(
    sandbox: LocalSandbox, tmp_path: Path
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**sandbox.environment(), "DAGSTER_HOME": str(home), "PATH": "/usr/bin:/bin"}
    completed = subprocess.run(
        materialize_command("mixpanel_raw_events*", _yesterday()),
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    warnings = [
        line
        for line in completed.stderr.splitlines()
        if re.search(r"\w+Warning: ", line) and DAGSTERS_CLI_NOTICE not in line
    ]
    assert warnings == []
    assert " - WARNING - " not in completed.stderr
    captured = list(home.rglob("*.err"))  # the steps' captured stderr (compute logs)
    assert captured
    for log in captured:
        assert not re.search(r"\w+Warning: ", log.read_text()), log
    with DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        entries = instance.all_logs(run.run_id)
    assert any("quarantined" in entry.message for entry in entries)  # said, at INFO
    loud = [entry.message for entry in entries if entry.level >= logging.WARNING]
    assert loud == []


def test_a_quarantine_near_its_limit_is_a_warning(
    sandbox: LocalSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fixture's day quarantines 2 of its 300 events (0.67 %): near a 0.8 % limit, within it.
    mapping = tmp_path / "mapping.yaml"
    text = DEFAULT_MAPPING_FILE.read_text()
    assert "max_quarantined_share: 0.01\n" in text
    mapping.write_text(
        text.replace("max_quarantined_share: 0.01\n", "max_quarantined_share: 0.008\n")
    )
    monkeypatch.setenv(MAPPING_VARIABLE, str(mapping))
    defs = build_definitions()
    with instance_for_test() as instance:
        result = materialize(
            [*defs.assets, *defs.asset_checks],
            partition_key=_yesterday(),
            instance=instance,
            resources=defs.resources,
            selection=["mixpanel_raw_events", "xdm_experience_events"],
        )
        assert result.success
        loud = [
            entry.message
            for entry in instance.all_logs(result.run_id)
            if entry.level >= logging.WARNING
        ]
    assert len(loud) == 1 and "near or over it" in loud[0], loud


def test_pytest_accepts_exactly_the_accepted_warnings() -> None:
    """pytest resets warning filters per test: pyproject.toml must repeat the accepted list."""
    import tomllib
    from pathlib import Path

    from mixpanel_assets.accepted_warnings import ACCEPTED

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    filters = pyproject["tool"]["pytest"]["ini_options"]["filterwarnings"]
    assert filters == [f"ignore:{message}" for message in ACCEPTED]
