"""A misconfigured run fails before its export, naming the setting: Mixpanel sees no request."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import instance_for_test, materialize

from mixpanel_assets.errors import ConfigError
from mixpanel_assets.pipeline import build_definitions
from mixpanel_assets.sandbox.local_sandbox import LocalSandbox


def _not_a_folder(tmp_path: Path) -> str:
    (tmp_path / "a-file").write_text("not a folder")
    return str(tmp_path / "a-file" / "data")


MISCONFIGURED = {
    "AEP_PLATFORM_URL": lambda tmp: "http://platform.example.com",
    "AEP_IMS_URL": lambda tmp: "ftp://ims-na1.adobelogin.com",
    "AEP_ORG_ID": lambda tmp: "not-an-org",
    "AEP_SANDBOX_NAME": lambda tmp: "Prod",
    "AEP_DATASET_ID": lambda tmp: " ",
    "AEP_CLIENT_SECRET": lambda tmp: " ",
    "AEP_UPLOAD_FILE_MAX_BYTES": lambda tmp: str(300 * 1024 * 1024),
    "AEP_TENANT_ID": lambda tmp: "not a tenant!",
    "MIXPANEL_ASSETS_MAPPING": lambda tmp: str(tmp / "missing-mapping.yaml"),
    "MIXPANEL_EVENT_TIME": lambda tmp: "local",
    "MIXPANEL_ASSETS_DATA_DIR": _not_a_folder,
    "MIXPANEL_ASSETS_COORDINATION_URL": lambda tmp: "mysql://db/x",
}


# Settings the partitions are built from: checked when the code location loads.
READ_AT_LOAD = {"MIXPANEL_EVENT_TIME"}


@pytest.mark.parametrize("variable", sorted(MISCONFIGURED))
def test_a_misconfigured_run_spends_no_mixpanel_query(
    variable: str, sandbox: LocalSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = MISCONFIGURED[variable](tmp_path)
    monkeypatch.setenv(variable, value)
    if variable in READ_AT_LOAD:
        # The partitions depend on it: the code location itself refuses to load.
        with pytest.raises(ConfigError, match=variable):
            build_definitions()
        assert sandbox.mixpanel.request_log == [], "no Mixpanel query was spent"
        return
    defs = build_definitions()
    day = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    with instance_for_test() as instance:
        result = materialize(
            [*defs.assets, *defs.asset_checks],
            partition_key=day,
            instance=instance,
            resources=defs.resources,
            raise_on_error=False,
        )
    assert not result.success
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    assert failure.step_key == "mixpanel_raw_events"
    assert variable in failure.step_failure_data.error.message
    assert sandbox.mixpanel.request_log == [], "no Mixpanel query was spent"
    assert sandbox.platform.dataset_records(sandbox.dataset_id).empty, "nothing reached AEP"


def test_only_the_steps_of_the_run_are_checked(
    sandbox: LocalSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of the raw asset alone needs no AEP setting."""
    monkeypatch.setenv("AEP_ORG_ID", "not-an-org")
    defs = build_definitions()
    day = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    raw = [asset for asset in defs.assets if asset.key.path[-1] == "mixpanel_raw_events"]
    with instance_for_test() as instance:
        result = materialize(raw, partition_key=day, instance=instance, resources=defs.resources)
    assert result.success and sandbox.mixpanel.request_log


def test_an_unset_variable_of_a_later_step_fails_the_run_before_any_step(
    sandbox: LocalSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dagster resolves every resource's variables when the run starts: nothing is spent."""
    monkeypatch.delenv("AEP_DATASET_ID")
    defs = build_definitions()
    day = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    with instance_for_test() as instance, pytest.raises(Exception, match="AEP_DATASET_ID"):
        materialize(
            [*defs.assets, *defs.asset_checks],
            partition_key=day,
            instance=instance,
            resources=defs.resources,
        )
    assert sandbox.mixpanel.request_log == []
