"""Owners, tags, code version, source links and freshness on every asset of the code location."""

import pytest

from mixpanel_assets.errors import ConfigError
from mixpanel_assets.pipeline import build_definitions


@pytest.fixture(autouse=True)
def start_date(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIXPANEL_START_DATE", "2026-11-01")


def test_every_asset_carries_owners_tags_version_and_a_link_to_its_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MIXPANEL_ASSETS_OWNERS", "data@example.com, team:data-eng")
    specs = {
        spec.key.to_user_string(): spec for spec in build_definitions().resolve_all_asset_specs()
    }
    assert set(specs) == {"mixpanel_raw_events", "xdm_experience_events", "aep_ingested_batches"}
    for spec in specs.values():
        assert spec.owners == ["data@example.com", "team:data-eng"]
        assert spec.tags["source"] == "mixpanel" and spec.tags["destination"] == "aep"
        assert spec.code_version and spec.code_version != "unknown"
        (reference,) = spec.metadata["dagster/code_references"].code_references
        assert reference.file_path.endswith("assets.py") and reference.line_number > 0
    # Only the last asset of the chain declares how fresh it must be: a late day turns red.
    loaded = specs["aep_ingested_batches"].freshness_policy
    assert loaded is not None and loaded.fail_window.to_timedelta().total_seconds() == 30 * 3600
    assert specs["mixpanel_raw_events"].freshness_policy is None


def test_no_owners_by_default_and_a_bad_owner_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    assert all(not spec.owners for spec in build_definitions().resolve_all_asset_specs())
    monkeypatch.setenv("MIXPANEL_ASSETS_OWNERS", "data@example.com,not an owner")
    with pytest.raises(ConfigError, match=r"MIXPANEL_ASSETS_OWNERS.*'not an owner'"):
        build_definitions()
