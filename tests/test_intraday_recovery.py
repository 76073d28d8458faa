"""Intraday loads that die at the worst moment, and the schedule that starts them."""

from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import build_schedule_context, instance_for_test
from isal import igzip

from mixpanel_assets.aep.assets import AEP_BATCHES, AEP_DAY_TAG
from mixpanel_assets.coordination import coordinator
from mixpanel_assets.errors import ConfigError
from mixpanel_assets.intraday.ledger import DayLedger
from mixpanel_assets.intraday.schedule import RESERVED_QUERIES, SCHEDULE_NAME, intraday_crons
from mixpanel_assets.mixpanel.rate_budget import RateBudget
from mixpanel_assets.pipeline import build_definitions
from mixpanel_assets.sandbox.local_sandbox import CLIENT_SECRET, LocalSandbox
from mixpanel_assets.storage import PartitionFiles
from mixpanel_assets.xdm.assets import XDM_EVENTS
from tests.platform_clients import emulator_client
from tests.test_intraday import DAY, KEY, Clock, _cut, _live, _metadata, _run, moving  # noqa: F401


def test_a_load_that_died_once_its_batch_was_live_is_replayed_by_the_next(
    moving: tuple[LocalSandbox, Clock],  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sandbox, time = moving
    defs = build_definitions()
    with instance_for_test() as instance:
        time.at(10)
        _metadata(_run(defs, instance, sandbox), AEP_BATCHES)
        # The next load dies after AEP made its batch live, before the ledger recorded it.
        real_commit = DayLedger.commit

        def die(*args: object, **kwargs: object) -> None:
            raise SystemExit("killed")

        monkeypatch.setattr(DayLedger, "commit", die)
        time.at(11)
        assert not _run(defs, instance, sandbox).success
        monkeypatch.setattr(DayLedger, "commit", real_commit)
        orphaned = _live(sandbox)
        assert max(orphaned.values()) > _cut(10)  # its events are live, once

        time.at(12)
        recovered = _metadata(_run(defs, instance, sandbox), AEP_BATCHES)
        live = _live(sandbox)
        assert set(orphaned) < set(live) and max(live.values()) <= _cut(12)
        assert len(recovered["replaced_batch_ids"]) == 1
        assert recovered["dagster/row_count"] == len(live)
        statuses = {b["id"]: b["status"] for b in sandbox.platform.batches(sandbox.dataset_id)}
        assert statuses[recovered["replaced_batch_ids"][0]] != "success"
        assert set(recovered["batch_ids"]) == {i for i, s in statuses.items() if s == "success"}


def test_intraday_minutes_under_15_are_refused_when_the_code_loads(
    sandbox: LocalSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIXPANEL_ASSETS_INTRADAY_MINUTES", "10")
    with pytest.raises(ConfigError, match="MIXPANEL_ASSETS_INTRADAY_MINUTES='10'"):
        build_definitions()
    monkeypatch.setenv("MIXPANEL_ASSETS_INTRADAY_MINUTES", "0")
    assert SCHEDULE_NAME not in {s.name for s in build_definitions().schedules}
    monkeypatch.setenv("MIXPANEL_ASSETS_INTRADAY_MINUTES", "30")
    schedule = build_definitions().resolve_schedule_def(SCHEDULE_NAME)
    assert list(schedule.cron_schedule) == ["0 * * * *", "30 * * * *"]
    assert intraday_crons(90)[0] == "0 0,3,6,9,12,15,18,21 * * *"


def test_the_schedule_loads_the_open_day_and_gives_way_when_the_budget_is_short(
    sandbox: LocalSandbox, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    defs = build_definitions()
    schedule = defs.resolve_schedule_def(SCHEDULE_NAME)
    tick = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with instance_for_test() as instance:
        with build_schedule_context(
            instance=instance,
            scheduled_execution_time=tick,
            resources=defs.resources,
            repository_def=defs.get_repository_def(),
        ) as context:
            (request,) = schedule.evaluate_tick(context).run_requests
        assert request.partition_key == tick.date().isoformat()
        # Other runs booked all but a few of the hour's queries.
        budget = RateBudget(
            coordinator(""),
            f"mixpanel-export-budget-{sandbox.mixpanel.project_id}",
            clock=lambda: tick.timestamp(),
            sleep=lambda _: None,
        )
        for _ in range(60 - RESERVED_QUERIES + 1):
            budget.reserve()
        with build_schedule_context(
            instance=instance,
            scheduled_execution_time=tick,
            resources=defs.resources,
            repository_def=defs.get_repository_def(),
        ) as context:
            skipped = schedule.evaluate_tick(context)
        assert not skipped.run_requests
        assert "left this hour" in (skipped.skip_message or "")


def test_a_load_whose_batch_failed_loses_nothing(
    moving: tuple[LocalSandbox, Clock],  # noqa: F811 (the fixture)
) -> None:
    sandbox, time = moving
    defs = build_definitions()
    with instance_for_test() as instance:
        time.at(10)
        _metadata(_run(defs, instance, sandbox), AEP_BATCHES)
        morning = _live(sandbox)
        sandbox.platform.fail_next_batch("102", "The batch failed processing.")
        time.at(11)
        assert not _run(defs, instance, sandbox).success
        assert _live(sandbox) == morning
        time.at(12)
        _metadata(_run(defs, instance, sandbox), AEP_BATCHES)
        live = _live(sandbox)
        # The failed load's events came with the next one: none processed by then is missing.
        assert set(morning) < set(live)
        assert min(v for k, v in live.items() if k not in morning) <= _cut(10) + 30 * 60_000


def test_a_closed_day_re_run_after_its_loads_replays_them_all_with_one_batch(
    moving: tuple[LocalSandbox, Clock],  # noqa: F811 (the fixture)
) -> None:
    sandbox, time = moving
    defs = build_definitions()
    with instance_for_test() as instance:
        for hour in (9, 15, 24.5):
            time.at(hour)
            closed = _metadata(_run(defs, instance, sandbox), AEP_BATCHES)
        assert closed["day_complete"] is True
        before = _live(sandbox)
        time.at(26)
        sandbox.mixpanel.add_late_events(DAY, 3)
        time.at(26.5)
        rerun = _metadata(_run(defs, instance, sandbox), AEP_BATCHES)
        after = _live(sandbox)
    assert set(before) < set(after) and len(after) == len(before) + 3
    assert len(rerun["batch_ids"]) == 1
    assert sorted(rerun["replaced_batch_ids"]) == sorted(closed["batch_ids"])


def test_a_batch_replaced_outside_the_pipeline_stops_loads_and_the_close_replays_the_day(
    moving: tuple[LocalSandbox, Clock],  # noqa: F811 (the fixture)
    tmp_path: Path,
) -> None:
    sandbox, time = moving
    defs = build_definitions()
    with instance_for_test() as instance:
        time.at(10)
        first = _metadata(_run(defs, instance, sandbox), AEP_BATCHES)
        # Someone replaces the load's batch by hand with a batch of one of its records.
        files = PartitionFiles(data_dir=str(sandbox.data_dir))
        with (
            files.folder(XDM_EVENTS, KEY).local_copy("events") as events,
            igzip.open(events, "rb") as lines,
        ):
            record = next(iter(lines))
        (tmp_path / "one.json").write_bytes(record)
        client = emulator_client(sandbox.platform, CLIENT_SECRET)
        by_hand = client.create_batch(
            dataset_id=sandbox.dataset_id,
            external_id="by-hand",
            predecessors=first["batch_ids"],
            tags={AEP_DAY_TAG: [f"{sandbox.mixpanel.project_id}/{KEY}"]},
            partial_ingestion_percent=0,
        )
        client.upload_file(by_hand, sandbox.dataset_id, "one.json", tmp_path / "one.json")
        client.complete_batch(by_hand)
        client.wait_for_batch(by_hand, timeout_seconds=30, poll_seconds=0.02)

        time.at(11)
        refused = _run(defs, instance, sandbox)
        assert not refused.success
        assert len(_live(sandbox)) == 1

        time.at(24.5)
        closed = _metadata(_run(defs, instance, sandbox), AEP_BATCHES)
        final = _live(sandbox)
    assert closed["day_complete"] is True and len(closed["batch_ids"]) == 1
    assert by_hand in closed["replaced_batch_ids"]
    assert closed["dagster/row_count"] == len(final) > 1
