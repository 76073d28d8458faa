"""Exactly once in AEP, in a real Dagster instance on the local sandbox.

A day materialized three times and a backfill over it leave each event in the dataset once, with
the replay chain in the Catalog; every fault ends in a retried success or in a failed run that
names AEP's reason, and never leaves a batch ``loading``.
"""

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dagster import (
    AssetCheckSeverity,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    instance_for_test,
    materialize,
)

from mixpanel_assets.aep.assets import AEP_BATCHES, AEP_DAY_TAG
from mixpanel_assets.aep.client import AEPClient
from mixpanel_assets.aep.resource import AEPResource
from mixpanel_assets.pipeline import build_definitions
from mixpanel_assets.sandbox.local_sandbox import LocalSandbox
from mixpanel_assets.xdm.schema import CLASS_ID


def _closed_days(count: int) -> list[str]:
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    return [(yesterday - timedelta(days=back)).isoformat() for back in reversed(range(count))]


def _run(
    defs: Definitions,
    day: str,
    instance: DagsterInstance,
    resources: dict[str, Any] | None = None,
    *,
    only_aep: bool = False,
) -> ExecuteInProcessResult:
    """The day's chain (or only its AEP asset, the upstream partitions being there)."""
    return materialize(
        [*defs.assets, *defs.asset_checks],
        partition_key=day,
        instance=instance,
        resources=resources or defs.resources,
        selection=[AEP_BATCHES] if only_aep else None,
        raise_on_error=False,
    )


def _batches(result: ExecuteInProcessResult) -> dict[str, Any]:
    assert result.success, _failure(result)
    (event,) = result.asset_materializations_for_node(AEP_BATCHES)
    return {key: value.value for key, value in event.metadata.items()}


def _failure(result: ExecuteInProcessResult) -> str:
    failures = [event for event in result.all_events if event.is_step_failure]
    return "\n".join(str(event.step_failure_data.error.message) for event in failures)


def _xdm_rows(result: ExecuteInProcessResult) -> int:
    (event,) = result.asset_materializations_for_node("xdm_experience_events")
    return event.metadata["dagster/row_count"].value


def _loading(sandbox: LocalSandbox, dataset_id: str | None = None) -> list[str]:
    batches = sandbox.platform.batches(dataset_id or sandbox.dataset_id)
    return [batch["id"] for batch in batches if batch["status"] == "loading"]


def _client(sandbox: LocalSandbox) -> AEPClient:
    env = sandbox.environment()
    return AEPClient(
        ims_url=env["AEP_IMS_URL"],
        platform_url=env["AEP_PLATFORM_URL"],
        client_id=env["AEP_CLIENT_ID"],
        client_secret=env["AEP_CLIENT_SECRET"],
        org_id=env["AEP_ORG_ID"],
        sandbox_name=env["AEP_SANDBOX_NAME"],
    )


def _resources(sandbox: LocalSandbox, defs: Definitions, **aep: Any) -> dict[str, Any]:
    """The definitions' resources with an AEP resource that retries and polls quickly."""
    env = sandbox.environment()
    resource = AEPResource(
        ims_url=env["AEP_IMS_URL"],
        platform_url=env["AEP_PLATFORM_URL"],
        client_id=env["AEP_CLIENT_ID"],
        client_secret=env["AEP_CLIENT_SECRET"],
        org_id=env["AEP_ORG_ID"],
        dataset_id=env["AEP_DATASET_ID"],
        retry_base_seconds=0.01,
        poll_seconds=0.02,
        **aep,
    )
    return {**defs.resources, "aep": resource}


def test_a_day_run_three_times_then_backfilled_is_held_exactly_once(
    sandbox: LocalSandbox,
) -> None:
    day, last_day = _closed_days(2)
    defs = build_definitions()
    quick = _resources(sandbox, defs)
    day_tag = {AEP_DAY_TAG: [f"{sandbox.mixpanel.project_id}/{day}"]}
    with instance_for_test() as instance:
        reruns = [_batches(_run(defs, day, instance, resources=quick))]
        reruns += [_batches(_run(defs, day, instance, quick, only_aep=True)) for _ in range(2)]
        # A run of the day that died after creating its batch: tagged, never completed.
        dead = _client(sandbox).create_batch(
            dataset_id=sandbox.dataset_id,
            external_id=f"mixpanel-{sandbox.mixpanel.project_id}-{day}-deadbeef",
            predecessors=reruns[-1]["batch_ids"],
            tags=day_tag,
            partial_ingestion_percent=0,
        )
        # A backfill of a range over the day: the whole chain, a run per day.
        backfill_results = {d: _run(defs, d, instance, resources=quick) for d in (day, last_day)}
    backfill = {d: _batches(result) for d, result in backfill_results.items()}

    # The day's batches replay one another: a chain, each link visible in the Catalog.
    chain = [run["batch_ids"][0] for run in [*reruns, backfill[day]]]
    assert len(set(chain)) == 4
    assert reruns[0]["replaced_batch_ids"] == []
    for earlier, later, run in zip(
        chain[:-1], chain[1:], [*reruns[1:], backfill[day]], strict=True
    ):
        assert run["replaced_batch_ids"] == [earlier]
        assert sandbox.platform.batch(later)["replay"] == {
            "predecessors": [f"${earlier}"],
            "reason": "replace",
        }
        assert sandbox.platform.batch(earlier)["tags"]["acp_successor"] == [later]
    statuses = [sandbox.platform.batch(batch)["status"] for batch in chain]
    assert statuses == ["inactive", "inactive", "inactive", "success"]
    assert backfill[day]["aborted_batch_ids"] == [dead]
    assert sandbox.platform.batch(dead)["status"] == "aborted"
    assert backfill[last_day]["replaced_batch_ids"] == []

    # The dataset holds both days, each event once, from one live batch a day.
    records = sandbox.platform.dataset_records(sandbox.dataset_id)
    assert records["_id"].is_unique
    assert len(records) == sum(_xdm_rows(result) for result in backfill_results.values())
    assert len(records) == sum(run["dagster/row_count"] for run in backfill.values())
    assert set(records["batch_id"]) == {run["batch_ids"][0] for run in backfill.values()}
    assert _loading(sandbox) == []

    # With Dagster's record and the partition manifest gone, the Catalog still knows the day.
    (sandbox.data_dir / AEP_BATCHES / day / "manifest.json").unlink()
    with instance_for_test() as forgetful:
        again = _batches(_run(defs, day, forgetful, resources=quick, only_aep=True))
    assert again["replaced_batch_ids"] == backfill[day]["batch_ids"]
    records = sandbox.platform.dataset_records(sandbox.dataset_id)
    assert records["_id"].is_unique and len(records) == sum(
        run["dagster/row_count"] for run in (again, backfill[last_day])
    )


def test_every_fault_ends_in_a_retried_success_or_a_failed_run_naming_aeps_reason(
    sandbox: LocalSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = _closed_days(1)[0]
    defs = build_definitions()
    platform = sandbox.platform
    with instance_for_test() as instance:
        # Transient faults everywhere: retried into one successful batch.
        platform.queue_fault("POST", "/ims/token/v3", 503, count=2, retry_after=0)
        platform.queue_fault("POST", "/data/foundation/import/batches", 429, retry_after=0)
        platform.queue_fault("PUT", "/data/foundation/import/batches/", 503, count=2)
        platform.queue_fault("POST", "/data/foundation/import/batches/", 500, after_handling=True)
        platform.queue_fault("GET", "/data/foundation/catalog/batches/", 502)
        retried = _run(defs, day, instance, resources=_resources(sandbox, defs))
        good = _batches(retried)
        assert good["dagster/row_count"] == _xdm_rows(retried) == good["uploaded_records"]
        assert [batch["id"] for batch in platform.batches(sandbox.dataset_id)] == good["batch_ids"]
        statuses = [entry.status for entry in platform.request_log]
        assert statuses.count(503) == 4 and {429, 500, 502} <= set(statuses)

        # AEP fails the batch: the run fails with AEP's code and description.
        platform.fail_next_batch("INGEST-2301-500", "The storage layer is unavailable.")
        failed = _run(defs, day, instance, resources=_resources(sandbox, defs), only_aep=True)
        assert not failed.success
        assert "INGEST-2301-500: The storage layer is unavailable." in _failure(failed)

        # AEP rejects rows: within the allowance a warning, beyond it a failed run.
        allowing = _resources(sandbox, defs, partial_ingestion_percent=5)
        platform.reject_rows_of_next_batch(2)
        within = _run(defs, day, instance, resources=allowing, only_aep=True)
        partial = _batches(within)
        assert partial["failed_records"] == 2
        assert partial["dagster/row_count"] == partial["uploaded_records"] - 2
        assert partial["replaced_batch_ids"] == good["batch_ids"]
        (check,) = within.get_asset_check_evaluations()
        assert (check.check_name, check.passed) == ("batch_succeeded", False)
        assert check.severity == AssetCheckSeverity.WARN
        assert len(check.metadata["failed_rows"].value) == 2
        platform.reject_rows_of_next_batch(100)
        beyond = _run(defs, day, instance, resources=allowing, only_aep=True)
        assert not beyond.success
        message = _failure(beyond)
        assert "INGEST-1212-400" in message and "partial ingestion threshold of 5%" in message
        assert "Rejected by a fault queued on the local platform." in message

        # A dataset on a schema without the mapping's fields: refused before any upload.
        client = _client(sandbox)
        bare_schema = client.create_tenant_resource(
            "schemas",
            {
                "title": "Bare events",
                "description": "composed by hand",
                "type": "object",
                "allOf": [{"$ref": CLASS_ID}],
            },
        )
        bare = client.create_dataset("bare events", bare_schema["$id"], "")
        monkeypatch.setenv("AEP_DATASET_ID", bare)
        mismatched = _run(build_definitions(), day, instance, only_aep=True)
        assert not mismatched.success
        message = _failure(mismatched)
        assert f"does not fit the schema of dataset {bare}" in message
        assert "_localsandbox: not a field of the dataset's schema" in message
        # The day's first record is a web or an app event (synthetic data varies by day).
        assert re.search(r"\b(web|application): not a field of the dataset's schema", message)
        assert platform.batches(bare) == []

    # Through it all the dataset kept exactly the last good day, and nothing is left loading.
    records = platform.dataset_records(sandbox.dataset_id)
    assert records["_id"].is_unique and set(records["batch_id"]) == set(partial["batch_ids"])
    assert [batch["status"] for batch in platform.batches(sandbox.dataset_id)] == [
        "inactive",
        "failed",
        "success",
        "failed",
    ]
