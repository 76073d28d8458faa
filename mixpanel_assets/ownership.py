"""What a team sees on every asset: owners, tags, code version, source links, freshness."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version

from dagster import AssetsDefinition, AssetSpec, FreshnessPolicy, with_source_code_references

from mixpanel_assets.errors import ConfigError

OWNERS_VARIABLE = "MIXPANEL_ASSETS_OWNERS"
TAGS = {"source": "mixpanel", "destination": "aep"}
# A closed day is loaded an hour after midnight and AEP may take hours to process it: a day
# with no new load after 26 hours warns, after 30 fails (the asset turns red in the UI).
LOADED_FRESHNESS = FreshnessPolicy.time_window(
    fail_window=timedelta(hours=30), warn_window=timedelta(hours=26)
)
_OWNER = re.compile(r"(team:[A-Za-z0-9_-]+|[^@\s,]+@[^@\s,]+\.[^@\s,]+)")


def owners() -> list[str]:
    """MIXPANEL_ASSETS_OWNERS: comma-separated e-mail addresses or ``team:<name>``s."""
    value = os.environ.get(OWNERS_VARIABLE, "")
    found = [owner.strip() for owner in value.split(",") if owner.strip()]
    bad = [owner for owner in found if not _OWNER.fullmatch(owner)]
    if bad:
        raise ConfigError(
            f"{OWNERS_VARIABLE}={value!r}: {bad[0]!r} is not an owner: give e-mail addresses or "
            "team:<name>, separated by commas (e.g. data@example.com,team:data-eng)."
        )
    return found


def code_version() -> str:
    """The installed package's version, ``unknown`` in a source tree never installed."""
    try:
        return version("mixpanel-assets")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def with_ownership(
    assets: Sequence[AssetsDefinition], loaded_asset: str, team: list[str]
) -> list[AssetsDefinition]:
    """``assets`` with owners, tags, code version and links to their source.

    ``loaded_asset`` (the last of the chain) also declares how fresh it must be.
    """
    release = code_version()

    def attributes(spec: AssetSpec) -> AssetSpec:
        return spec.replace_attributes(
            owners=team,
            tags={**spec.tags, **TAGS},
            code_version=release,
            **({"freshness_policy": LOADED_FRESHNESS} if spec.key.path[-1] == loaded_asset else {}),
        )

    mapped = [assets_def.map_asset_specs(attributes) for assets_def in assets]
    return list(with_source_code_references(mapped))  # type: ignore[arg-type]
