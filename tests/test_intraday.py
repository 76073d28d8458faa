"""Intraday loads of the open day on the local sandbox, with a clock the test moves.

The Mixpanel emulator serves an event only once its ``mp_processing_time_ms`` has passed on the
test's clock, and the pipeline reads the same clock: several loads of an open day, then the
close, and after each the live dataset holds each event processed so far, once.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from dagster import (
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    build_op_context,
    instance_for_test,
    materialize,
)

from mixpanel_assets.aep.assets import AEP_BATCHES
from mixpanel_assets.aep.resource import AEPResource
from mixpanel_assets.intraday import clock
from mixpanel_assets.intraday.ledger import VISIBILITY_MARGIN_MS
from mixpanel_assets.mixpanel.assets import RAW_EVENTS
from mixpanel_assets.pipeline import build_definitions
from mixpanel_assets.sandbox.local_sandbox import TENANT_ID, LocalSandbox, local_sandbox
from mixpanel_assets.storage import PartitionFiles
from mixpanel_assets.xdm.assets import XDM_EVENTS

DAY = datetime.now(UTC).date() - timedelta(days=1)
KEY = DAY.isoformat()


@dataclass
class Clock:
    seconds: float

    def at(self, hour: float) -> None:
        self.seconds = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC).timestamp() + hour * 3600


@pytest.fixture
def moving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LocalSandbox, Clock]]:
    """The local sandbox and the pipeline on one clock, set by the test."""
    time = Clock(0)
    time.at(12)
    monkeypatch.setattr(clock, "now", lambda: datetime.fromtimestamp(time.seconds, UTC))
    with local_sandbox(
        tmp_path / "data", events_per_day=2000, processing_seconds=0.02, clock=lambda: time.seconds
    ) as started:
        for name, value in started.environment().items():
            monkeypatch.setenv(name, value)
        yield started, time


def _resources(
    sandbox: LocalSandbox, defs: Definitions, dataset_id: str | None = None
) -> dict[str, Any]:
    env = sandbox.environment()
    aep = AEPResource(
        ims_url=env["AEP_IMS_URL"],
        platform_url=env["AEP_PLATFORM_URL"],
        client_id=env["AEP_CLIENT_ID"],
        client_secret=env["AEP_CLIENT_SECRET"],
        org_id=env["AEP_ORG_ID"],
        dataset_id=dataset_id or env["AEP_DATASET_ID"],
        retry_base_seconds=0.01,
        poll_seconds=0.02,
    )
    return {**defs.resources, "aep": aep}


def _run(
    defs: Definitions, instance: DagsterInstance, sandbox: LocalSandbox
) -> ExecuteInProcessResult:
    return materialize(
        [*defs.assets, *defs.asset_checks],
        partition_key=KEY,
        instance=instance,
        resources=_resources(sandbox, defs),
        raise_on_error=False,
    )


def _metadata(result: ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    failures = [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    assert result.success, failures
    (event,) = result.asset_materializations_for_node(asset)
    return {key: value.value for key, value in event.metadata.items()}


def _live(sandbox: LocalSandbox) -> dict[str, int]:
    """The dataset's live records: _id -> Mixpanel processing time."""
    records = sandbox.platform.dataset_records(sandbox.dataset_id)
    ids = list(records["_id"])
    assert len(ids) == len(set(ids)), "an event is live twice"
    return {
        row["_id"]: orjson.loads(row["record"])[f"_{TENANT_ID}"]["mixpanel"]["processingTimeMs"]
        for _, row in records.iterrows()
    }


def _cut(hour: float) -> int:
    return (
        int(datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC).timestamp() * 1000 + hour * 3600_000)
        - VISIBILITY_MARGIN_MS
    )


def test_loads_of_an_open_day_then_its_close_hold_each_event_once(
    moving: tuple[LocalSandbox, Clock],
) -> None:
    sandbox, time = moving
    defs = build_definitions()

    with instance_for_test() as instance:
        time.at(12)
        first = _run(defs, instance, sandbox)
        raw = _metadata(first, RAW_EVENTS)
        assert raw["day_complete"] is False and raw["intraday_load"] == 1
        batches = _metadata(first, AEP_BATCHES)
        assert batches["day_complete"] is False
        live = _live(sandbox)
        assert live and max(live.values()) <= _cut(12)
        assert batches["dagster/row_count"] == len(live)
        morning = set(live)

        time.at(13)
        second = _run(defs, instance, sandbox)
        second_raw = _metadata(second, RAW_EVENTS)
        assert "> " + str(_cut(12)) in second_raw["request"]["where"]
        batches = _metadata(second, AEP_BATCHES)
        live = _live(sandbox)
        assert morning < set(live) and max(live.values()) <= _cut(13)
        new = set(live) - morning
        assert all(live[event] > _cut(12) for event in new)
        assert batches["load_records"] == len(new) and batches["dagster/row_count"] == len(live)
        assert len(batches["batch_ids"]) == 2 and batches["replaced_batch_ids"] == []
        assert _metadata(second, XDM_EVENTS)["dagster/row_count"] == len(new)

        # Nothing new: AEP is left as it was.
        catalog_before = sandbox.platform.batches(sandbox.dataset_id)
        again = _run(defs, instance, sandbox)
        assert _metadata(again, AEP_BATCHES)["load_records"] == 0
        assert sandbox.platform.batches(sandbox.dataset_id) == catalog_before

        # Late events of an earlier hour, processed now, come with the next load.
        time.at(15)
        sandbox.mixpanel.add_late_events(DAY, 4)
        time.at(15.5)
        third = _run(defs, instance, sandbox)
        assert _metadata(third, AEP_BATCHES)["day_complete"] is False
        before_close = _live(sandbox)
        assert set(live) < set(before_close)

        time.at(24.5)
        closing = _run(defs, instance, sandbox)
        for asset in (RAW_EVENTS, XDM_EVENTS, AEP_BATCHES):
            assert _metadata(closing, asset)["day_complete"] is True
        closed = _metadata(closing, AEP_BATCHES)
        final = _live(sandbox)
        assert set(before_close) < set(final)
        assert closed["dagster/row_count"] == len(final)
        assert closed["aep_rows_per_unique_event"] == 1.0
        live_batches = {
            batch["id"]
            for batch in sandbox.platform.batches(sandbox.dataset_id)
            if batch["status"] == "success"
        }
        assert set(closed["batch_ids"]) == live_batches
        assert _metadata(closing, XDM_EVENTS)["dagster/row_count"] == len(final)

    # The same as the day loaded only after it closed, into a dataset of its own.
    _assert_same_as_loaded_once(sandbox, defs, set(final))


def _assert_same_as_loaded_once(sandbox: LocalSandbox, defs: Definitions, final: set[str]) -> None:

    other = sandbox.platform.create_dataset("loaded-once")
    resources = _resources(sandbox, defs, other)
    resources["partition_files"] = PartitionFiles(data_dir=str(sandbox.data_dir / "once"))
    with instance_for_test() as instance:
        once = materialize(
            [*defs.assets, *defs.asset_checks],
            partition_key=KEY,
            instance=instance,
            resources=resources,
            raise_on_error=False,
        )
        assert once.success
    assert set(sandbox.platform.dataset_records(other)["_id"]) == final


def test_an_event_mixpanel_processed_again_is_not_loaded_twice(
    moving: tuple[LocalSandbox, Clock],
) -> None:
    sandbox, time = moving
    defs = build_definitions()
    with instance_for_test() as instance:
        time.at(12)
        _metadata(_run(defs, instance, sandbox), AEP_BATCHES)
        morning = _live(sandbox)
        seen = [
            line
            for line in sandbox.mixpanel.events_for_day(DAY)
            if orjson.loads(line)["properties"]["mp_processing_time_ms"] <= _cut(12)
        ]
        time.at(12.5)
        sandbox.mixpanel.add_resent_events(DAY, seen[:5])  # a client's retries, processed again
        time.at(13)
        second = _run(defs, instance, sandbox)
        assert _metadata(second, XDM_EVENTS)["duplicates_dropped"] >= 4
        live = _live(sandbox)  # no event live twice
        assert set(morning) < set(live)


def test_the_unique_id_check_looks_across_the_days_loads(
    moving: tuple[LocalSandbox, Clock],
) -> None:
    sandbox, time = moving
    defs = build_definitions()
    with instance_for_test() as instance:
        time.at(12)
        _metadata(_run(defs, instance, sandbox), AEP_BATCHES)
        # The load's XDM file, presented as the day's second load: every _id is already live.
        files = PartitionFiles(data_dir=str(sandbox.data_dir))
        folder = files.folder(XDM_EVENTS, KEY)
        manifest = folder.manifest()
        manifest["intraday_load"] = {**manifest["intraday_load"], "number": 2}
        folder.store.write_bytes("manifest.json", orjson.dumps(manifest))
        (unique,) = [
            check
            for check in defs.asset_checks
            if any(key.name == "unique_event_ids" for key in check.check_keys)
        ]
        evaluation = unique(
            build_op_context(partition_key=KEY, resources={"partition_files": files})
        )
    assert not evaluation.passed
    assert evaluation.metadata["ids_live_from_earlier_loads"].value == manifest["records"] > 0
