"""The XDM asset's checks in real Dagster runs on the local sandbox: the quarantine share blocks
a bad day, the event-time check warns without blocking, a bad mapping file stops the run."""

import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest
from dagster import (
    AssetCheckSeverity,
    AssetKey,
    AssetSelection,
    ExecuteInProcessResult,
    instance_for_test,
    materialize,
)

from mixpanel_assets.pipeline import build_definitions
from mixpanel_assets.sandbox.local_sandbox import LocalSandbox, local_sandbox
from mixpanel_assets.storage import PartitionFiles
from mixpanel_assets.xdm.checks import FROM_FACTS, FROM_FILE
from mixpanel_assets.xdm.spec import DEFAULT_MAPPING_FILE
from mixpanel_assets.xdm.validity import sampled

XDM = "xdm_experience_events"


@pytest.fixture(autouse=True)
def default_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MIXPANEL_ASSETS_MAPPING", raising=False)


def _run(day: str) -> ExecuteInProcessResult:
    defs = build_definitions()
    with instance_for_test() as instance:
        return materialize(
            [*defs.assets, *defs.asset_checks],
            partition_key=day,
            instance=instance,
            resources=defs.resources,
            raise_on_error=False,
        )


def _checks(result: ExecuteInProcessResult) -> dict:
    return {check.check_name: check for check in result.get_asset_check_evaluations()}


def _mapping_with(tmp_path: Path, old: str, new: str) -> str:
    text = DEFAULT_MAPPING_FILE.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "mapping.yaml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return str(path)


def test_a_day_over_the_quarantine_limit_never_reaches_aep(
    sandbox: LocalSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sandbox quarantines 1 line in 200 (no identity), well inside the default limit; a
    # stricter limit must stop the day.
    stricter = _mapping_with(
        tmp_path, "max_quarantined_share: 0.01", "max_quarantined_share: 0.002"
    )
    monkeypatch.setenv("MIXPANEL_ASSETS_MAPPING", stricter)
    day = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    result = _run(day)

    assert not result.success
    checks = _checks(result)
    share = checks["quarantine_share"]
    assert not share.passed and share.severity == AssetCheckSeverity.ERROR
    metadata = {key: value.value for key, value in share.metadata.items()}
    no_identity = metadata["quarantine_reasons"]["no identity"]
    assert metadata["quarantine_reasons"] == {"no identity": no_identity} and no_identity in (1, 2)
    assert metadata["quarantined_share"] == no_identity / 300
    assert metadata["max_quarantined_share"] == 0.002
    assert "above the 0.20% allowed" in share.description
    assert all(check.passed for name, check in checks.items() if name != "quarantine_share")
    assert result.asset_materializations_for_node("aep_ingested_batches") == []
    assert len(sandbox.platform.dataset_records(sandbox.dataset_id)) == 0


def test_a_legacy_project_read_as_utc_warns_but_still_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zone = ZoneInfo("America/New_York")
    day = datetime.now(zone).date() - timedelta(days=1)
    with local_sandbox(
        tmp_path / "data", events_per_day=200, timezone=zone.key, time_regime="project_local"
    ) as legacy:
        for name, value in legacy.environment().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("MIXPANEL_EVENT_TIME", "utc")  # the mistake the check is there for
        result = _run(day.isoformat())
        loaded = legacy.platform.dataset_records(legacy.dataset_id)

    assert result.success
    offset = _checks(result)["event_time_offset"]
    assert not offset.passed and offset.severity == AssetCheckSeverity.WARN
    noon = datetime.combine(day, datetime.min.time().replace(hour=12), zone)
    expected_lag = -int(noon.utcoffset().total_seconds() // 60)  # New York is behind: +4 or +5 h
    assert offset.metadata["suspected_offset_minutes"].value == expected_lag
    assert "MIXPANEL_EVENT_TIME=project_local" in offset.description
    assert len(loaded) > 0


def test_a_malformed_mapping_file_fails_the_run_naming_it(
    sandbox: LocalSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = _mapping_with(
        tmp_path, "$browser: {xdm: environment.browserDetails.name", "$browser: {xdm: browser.name"
    )
    monkeypatch.setenv("MIXPANEL_ASSETS_MAPPING", broken)
    result = _run((datetime.now(UTC).date() - timedelta(days=1)).isoformat())
    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure)
    # Checked before the export (mixpanel_assets.preflight): no Mixpanel query is spent on it.
    assert failure.step_key == "mixpanel_raw_events" and not sandbox.mixpanel.request_log
    message = str(failure.step_failure_data.error)
    assert f"MIXPANEL_ASSETS_MAPPING={broken}: properties.$browser: xdm 'browser.name'" in message


def _check_metadata(result: ExecuteInProcessResult, name: str) -> tuple[bool, dict]:
    check = _checks(result)[name]
    return check.passed, {key: value.value for key, value in check.metadata.items()}


def test_checks_judge_by_the_mappings_facts_and_judge_a_changed_file_itself(
    sandbox: LocalSandbox,
) -> None:
    day = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    result = _run(day)
    assert result.success
    for name in ("required_xdm_fields", "unique_event_ids", "counts_reconcile"):
        passed, metadata = _check_metadata(result, name)
        assert passed and metadata["judged_from"] == FROM_FACTS, name
    _, required = _check_metadata(result, "required_xdm_fields")
    assert required["records_read"] == required["records_in_manifest"] > 0

    # The events file replaced by hand (same name, same record count): a record without its
    # identity, another repeating the first one's _id. The mapping's facts are not about it.
    folder = PartitionFiles(data_dir=str(sandbox.data_dir)).folder(XDM, day)
    manifest = folder.manifest()
    path = Path(folder.location("events", manifest))
    with gzip.open(path, "rb") as events:
        records = [orjson.loads(line) for line in events]
    # Only the records validated in full are walked for empty values (the mapping writes none).
    in_sample = sum(sampled(record["_id"]) for record in records)
    assert required["records_walked_for_empty_values"] == in_sample < len(records)
    del records[1]["identityMap"]
    records[2]["_id"] = records[0]["_id"]
    with gzip.open(path, "wb") as events:
        events.writelines(orjson.dumps(record) + b"\n" for record in records)
    defs = build_definitions()
    with instance_for_test() as instance:
        checked = materialize(
            [*defs.assets, *defs.asset_checks],
            # The checks alone make no partitioned run: the export goes with them (the same
            # day again, which leaves the XDM files as they are).
            selection=AssetSelection.assets(AssetKey("mixpanel_raw_events"))
            | AssetSelection.checks_for_assets(AssetKey(XDM)),
            partition_key=day,
            instance=instance,
            resources=defs.resources,
            raise_on_error=False,
        )

    passed, required = _check_metadata(checked, "required_xdm_fields")
    assert not passed and required["judged_from"] == FROM_FILE
    assert required["records_walked_for_empty_values"] == required["records_read"]
    assert required["records_with_problems"] == 1
    assert required["examples"] == ["record 2: exactly one primary identity (found 0)"]
    passed, unique = _check_metadata(checked, "unique_event_ids")
    assert not passed and unique["judged_from"] == FROM_FILE and unique["repeated_ids"] == 1
    passed, counts = _check_metadata(checked, "counts_reconcile")
    assert passed and counts["judged_from"] == FROM_FACTS  # its quarantine file is the same
