"""Every setting a run needs, checked before the run spends a Mixpanel query or an AEP batch.

The raw asset calls ``check_run_settings`` first: the settings of the run's later steps (the
mapping file and tenant, the AEP endpoints, credentials' shape, dataset and upload size) and
the data dir are checked then, so a misconfigured run fails in seconds, naming the variable,
instead of after an export that used up part of Mixpanel's hourly query budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    DagsterInvalidConfigError,
    Failure,
    build_resources,
)

from mixpanel_assets.errors import ConfigError
from mixpanel_assets.mixpanel.resource import MixpanelResource
from mixpanel_assets.projects import FLAT, ProjectKeys
from mixpanel_assets.storage import PartitionFiles

# The run's later steps, by the last part of their asset key, and the resource each needs
# (the mapping is per project; the AEP resource is shared by every project).
_STEP_RESOURCES = {"xdm_experience_events": "xdm_mapping", "aep_ingested_batches": "aep"}
_SHARED = {"aep"}


def check_run_settings(
    context: AssetExecutionContext,
    mixpanel: MixpanelResource,
    files: PartitionFiles,
    project: ProjectKeys = FLAT,
) -> None:
    """Fail the run at once, without retries, naming the first setting that is wrong."""
    try:
        mixpanel.get_client()
        mixpanel.checked_event_time()
        files.coordinator()
        files.check_usable()
        with _later_resources(context, project) as later:
            if "xdm_mapping" in later:
                later["xdm_mapping"].spec(mixpanel)
                later["xdm_mapping"].worker_count()
            if "aep" in later:
                later["aep"].get_client()
    except ConfigError as problem:
        raise Failure(
            f"{problem} Nothing was exported: fix the setting and run again.",
            allow_retries=False,
        ) from None


@contextmanager
def _later_resources(
    context: AssetExecutionContext, project: ProjectKeys
) -> Iterator[dict[str, Any]]:
    """The resources of the project's later steps in the run, configured as those steps will
    get them, by their base names (``xdm_mapping``, ``aep``)."""
    bases = {
        _STEP_RESOURCES[key.path[-1]]
        for key in _run_asset_keys(context)
        if key.path[-1] in _STEP_RESOURCES and key.path[:-1] == project.prefix
    }
    names = {base: base if base in _SHARED else project.named(base) for base in bases}
    missing = sorted(name for name in names.values() if name not in context.job_def.resource_defs)
    if missing:
        raise ConfigError(f"the run's job has no resource {', '.join(missing)}")
    definitions = {name: context.job_def.resource_defs[name] for name in names.values()}
    run_config = (context.run.run_config or {}).get("resources") or {}
    try:
        with build_resources(
            definitions,
            resource_config={name: run_config[name] for name in definitions.keys() & run_config},
        ) as built:
            yield {base: getattr(built, name) for base, name in names.items()}
    except DagsterInvalidConfigError as problem:
        # Dagster names the variable that is unset ("the environment variable AEP_DATASET_ID").
        details = "; ".join(error.message for error in problem.errors) or str(problem)
        raise ConfigError(f"a setting the run needs is missing or malformed: {details}") from None


def _run_asset_keys(context: AssetExecutionContext) -> set[AssetKey]:
    """The assets this run materializes (an empty or missing selection means the whole job)."""
    return set(context.run.asset_selection or context.job_def.asset_layer.selected_asset_keys)
