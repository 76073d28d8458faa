"""Backfills in fewer requests: one Mixpanel export for a block of days of the same backfill.

Design notes: docs/design-notes.md, `mixpanel/backfill_batching.py`.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, RunsFilter
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES

from mixpanel_assets.coordination import Coordinator
from mixpanel_assets.mixpanel.export_client import (
    ExportQuery,
    ExportSummary,
    MixpanelExportClient,
)
from mixpanel_assets.storage import FileStore

BACKFILL_TAG = "dagster/backfill"
PARTITION_TAG = "dagster/partition"
STAGING_PREFIX = ".backfill-"
SCRATCH_PREFIX = ".staging-"  # FileStore.scratch's private folders
# What a run killed mid-write leaves: swept once nothing in it changed for this long.
STALE_SCRATCH_SECONDS = 6 * 3600
# A backfill this instance does not know (deleted, or another instance's): swept after this.
STALE_AFTER_SECONDS = 2 * 24 * 3600
_UNFINISHED = {BulkActionStatus.REQUESTED, BulkActionStatus.CANCELING, BulkActionStatus.FAILING}


def backfill_days(instance: DagsterInstance, backfill_id: str) -> set[date] | None:
    """Every day the backfill targets, known from its start; None when the instance cannot say."""
    backfill = instance.get_backfill(backfill_id)
    if backfill is None:
        return None
    names = backfill.partition_names
    if names is None and backfill.asset_backfill_data is not None:
        names = backfill.asset_backfill_data.get_partition_names()
    return {date.fromisoformat(name) for name in names} if names else None


def backfill_block(
    instance: DagsterInstance, backfill_id: str, day: date, days_per_request: int
) -> list[date]:
    """The consecutive days of ``day``'s block in the backfill (``[day]`` at the least).

    Blocks are cut from the days the backfill targets, so every run of a block finds the same
    block however the backfill submits its runs over time; only when the instance does not know
    the backfill are the days of its runs submitted so far used.
    """
    targeted = backfill_days(instance, backfill_id)
    if targeted is None:
        records = instance.get_run_records(RunsFilter(tags={BACKFILL_TAG: backfill_id}))
        targeted = {
            date.fromisoformat(record.dagster_run.tags[PARTITION_TAG])
            for record in records
            if PARTITION_TAG in record.dagster_run.tags
        }
    submitted = targeted | {day}
    first = min(submitted)
    index = (day - first).days // days_per_request
    block = {other for other in submitted if (other - first).days // days_per_request == index}
    return _consecutive_around(day, block)


def _consecutive_around(day: date, days: set[date]) -> list[date]:
    start = end = day
    while start - timedelta(days=1) in days:
        start -= timedelta(days=1)
    while end + timedelta(days=1) in days:
        end += timedelta(days=1)
    return [start + timedelta(days=offset) for offset in range((end - start).days + 1)]


class BackfillStaging:
    """Per-day export files of one backfill, shared by its runs (on any machine) under a lock.

    A day's summary is written after its file, so a summary present means the file is complete.
    A day handed to its run leaves a ``.taken`` mark, so that it is never exported for the block
    again; the folder goes once every day of the backfill is taken.
    """

    def __init__(self, store: FileStore, coordinator: Coordinator) -> None:
        self._store = store
        self._coordinator = coordinator

    @contextmanager
    def locked(self) -> Iterator[BackfillStaging]:
        """The staging, held under the backfill's lock for the block."""
        with self._coordinator.lock(_lock_name(self._store)):
            yield self

    def has(self, day: date) -> bool:
        """Whether the day's export file and its summary are staged (so the file is complete)."""
        return self._store.exists(_summary_name(day)) and self._store.exists(_data_name(day))

    def taken(self, day: date) -> bool:
        """Whether the day was already handed to its run."""
        return self._store.exists(_taken_name(day))

    def to_export(self, day: date, block: list[date]) -> list[date]:
        """The consecutive days around ``day`` of its block that are neither staged nor taken."""
        missing = {other for other in block if not self.has(other) and not self.taken(other)}
        return _consecutive_around(day, missing | {day})

    def stage(
        self,
        client: MixpanelExportClient,
        query: ExportQuery,
        day_of: Callable[[Any], date],
    ) -> None:
        """Export ``query``'s days in one request and keep each day's file for its run."""
        days = [
            query.from_date + timedelta(days=offset)
            for offset in range((query.to_date - query.from_date).days + 1)
        ]
        with self._store.scratch() as scratch:
            partial = {day: scratch / f"{day}.partial.jsonl.gz" for day in days}
            summaries = client.export_days_to_files(query, partial, day_of)
            for day, summary in summaries.items():
                self._store.put(partial[day], _data_name(day))
                record = {**asdict(summary), "event_counts": dict(summary.event_counts)}
                record["request"] = query.params(client.project_id)
                self._store.write_bytes(_summary_name(day), json.dumps(record).encode("utf-8"))

    def take(self, day: date, destination: Path) -> tuple[ExportSummary, dict[str, str]]:
        """Move ``day``'s staged file to ``destination``; its summary and the request made."""
        record = json.loads(self._store.read_bytes(_summary_name(day)))
        request = record.pop("request")
        record["event_counts"] = Counter(record["event_counts"])
        self._store.take(_data_name(day), destination)
        self._store.write_bytes(_taken_name(day), b"")
        self._store.remove(_summary_name(day))
        return ExportSummary(**record), request

    def remove_if_all_taken(self, days: set[date] | None) -> bool:
        """Drop the folder once every day of the backfill (``days``) has been taken."""
        if not days or not all(self.taken(day) for day in days):
            return False
        self._store.remove_tree()
        return True


def sweep_leftovers(
    instance: DagsterInstance,
    raw_events: FileStore,
    day_folder: FileStore,
    coordinator: Coordinator,
) -> list[str]:
    """Remove what ended backfills and killed runs left beside the raw partitions; the paths.

    A backfill's staging goes once the backfill has ended and none of its runs is still queued
    or running (or, for a backfill this instance does not know, once untouched for two days);
    ``.staging-*`` scratch folders go once untouched for hours, in the staging folders swept
    past and in this run's own day folder.
    """
    removed = []
    now = time.time()
    for staging in raw_events.children(STAGING_PREFIX):
        backfill_id = staging.root.rstrip("/").rsplit("/", 1)[-1][len(STAGING_PREFIX) :]
        if _backfill_ended(instance, backfill_id, staging, now):
            with coordinator.lock(_lock_name(staging)):
                staging.remove_tree()
            removed.append(staging.location())
        else:
            removed += _sweep_scratch(staging, now)
    return removed + _sweep_scratch(day_folder, now)


def _backfill_ended(
    instance: DagsterInstance, backfill_id: str, staging: FileStore, now: float
) -> bool:
    backfill = instance.get_backfill(backfill_id)
    if backfill is None:
        return _untouched_since(staging, now - STALE_AFTER_SECONDS)
    if backfill.status in _UNFINISHED:
        return False
    active = instance.get_runs_count(
        RunsFilter(tags={BACKFILL_TAG: backfill_id}, statuses=list(NOT_FINISHED_STATUSES))
    )
    return active == 0


def _sweep_scratch(folder: FileStore, now: float) -> list[str]:
    removed = []
    for scratch in folder.children(SCRATCH_PREFIX):
        if _untouched_since(scratch, now - STALE_SCRATCH_SECONDS):
            scratch.remove_tree()
            removed.append(scratch.location())
    return removed


def _untouched_since(folder: FileStore, cutoff: float) -> bool:
    written = [folder.modified(name) for name in folder.names()]
    if not written:
        written = [folder.fs.modified(folder.root).timestamp()] if folder.is_local else []
    return all(moment is None or moment < cutoff for moment in written)


def staging_store(raw_events: FileStore, backfill_id: str) -> FileStore:
    """The backfill's shared staging folder beside the raw partitions."""
    return raw_events.child(f"{STAGING_PREFIX}{backfill_id}")


def _lock_name(staging: FileStore) -> str:
    return f"backfill-staging:{staging.root}"


def _data_name(day: date) -> str:
    return f"{day}.jsonl.gz"


def _summary_name(day: date) -> str:
    return f"{day}.summary.json"


def _taken_name(day: date) -> str:
    return f"{day}.taken"
