"""The `dg` CLI the Dagster docs lead to: check, list and launch from the project folder."""

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mixpanel_assets.sandbox.local_sandbox import LocalSandbox

ROOT = Path(__file__).resolve().parents[1]
DG = str(Path(sys.executable).with_name("dg"))


def _dg(*arguments: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DG, *arguments], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_dg_checks_and_lists_the_definitions(sandbox: LocalSandbox, tmp_path: Path) -> None:
    env = {**sandbox.environment(), "DAGSTER_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    checked = _dg("check", "defs", env=env)
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-2000:]
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr
    listed = _dg("list", "defs", "--json", env=env)
    assert listed.returncode == 0, listed.stderr[-2000:]
    found = json.loads(listed.stdout)
    asset_keys = {asset["asset_key"] for asset in found["assets"]}
    assert {"mixpanel_raw_events", "xdm_experience_events", "aep_ingested_batches"} <= asset_keys
    assert "daily_ingestion_schedule" in {item["name"] for item in found["schedules"]}
    assert "late_events_sensor" in {item["name"] for item in found["sensors"]}


def test_dg_check_defs_names_a_missing_variable(tmp_path: Path) -> None:
    checked = _dg("check", "defs", env={"DAGSTER_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert checked.returncode != 0
    assert "MIXPANEL_START_DATE" in checked.stdout + checked.stderr


def test_dg_launch_moves_a_day(sandbox: LocalSandbox, tmp_path: Path) -> None:
    day = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    env = {**sandbox.environment(), "DAGSTER_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    launched = _dg("launch", "--assets", "mixpanel_raw_events*", "--partition", day, env=env)
    assert launched.returncode == 0, launched.stderr[-3000:]
    records = sandbox.platform.dataset_records(sandbox.dataset_id)
    assert len(records) > 0 and records["_id"].is_unique
    secret = sandbox.environment()["MIXPANEL_SERVICE_ACCOUNT_SECRET"]
    assert secret not in launched.stdout + launched.stderr
