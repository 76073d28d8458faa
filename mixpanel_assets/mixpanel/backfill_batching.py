"""Backfills in fewer requests: one Mixpanel export for a block of days of the same backfill.

A backfill launches one run per day, and Mixpanel allows 60 export queries an hour, so a year
asked day by day takes over six hours of quota. Instead, the days a backfill submitted are cut
into blocks of ``days_per_request`` consecutive days counted from its first day; whichever run of
a block comes first exports the whole block in one request, split into per-day files as it
streams, into a staging folder the backfill's runs share (beside the raw partitions, so on
object storage when they are). Every run then publishes its own day
from there, so partitions, checks and downstream assets stay per day.
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

from mixpanel_assets.coordination import Coordinator
from mixpanel_assets.mixpanel.export_client import (
    ExportQuery,
    ExportSummary,
    MixpanelExportClient,
)
from mixpanel_assets.storage import FileStore

BACKFILL_TAG = "dagster/backfill"
PARTITION_TAG = "dagster/partition"
# A backfill's staging folder outlives its runs only if a run died; sweep those after this long.
STALE_AFTER_SECONDS = 2 * 24 * 3600
STAGING_PREFIX = ".backfill-"


def backfill_block(
    instance: DagsterInstance, backfill_id: str, day: date, days_per_request: int
) -> list[date]:
    """The consecutive days of ``day``'s block in the backfill (``[day]`` at the least)."""
    records = instance.get_run_records(RunsFilter(tags={BACKFILL_TAG: backfill_id}))
    submitted = {
        date.fromisoformat(record.dagster_run.tags[PARTITION_TAG])
        for record in records
        if PARTITION_TAG in record.dagster_run.tags
    } | {day}
    first = min(submitted)
    index = (day - first).days // days_per_request
    block = {other for other in submitted if (other - first).days // days_per_request == index}
    start = end = day
    while start - timedelta(days=1) in block:
        start -= timedelta(days=1)
    while end + timedelta(days=1) in block:
        end += timedelta(days=1)
    return [start + timedelta(days=offset) for offset in range((end - start).days + 1)]


class BackfillStaging:
    """Per-day export files of one backfill, shared by its runs (on any machine) under a lock.

    A day's summary is written after its file, so a summary present means the file is complete.
    """

    def __init__(self, store: FileStore, coordinator: Coordinator) -> None:
        self._store = store
        self._coordinator = coordinator

    @contextmanager
    def locked(self) -> Iterator[BackfillStaging]:
        with self._coordinator.lock(f"backfill-staging:{self._store.root}"):
            yield self

    def has(self, day: date) -> bool:
        return self._store.exists(_summary_name(day)) and self._store.exists(_data_name(day))

    def stage(
        self,
        client: MixpanelExportClient,
        query: ExportQuery,
        day_of: Callable[[Any], date],
    ) -> None:
        """Export ``query``'s days in one request and keep each day's file for its run."""
        self._sweep_stale_siblings()
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
        self._store.remove(_summary_name(day))
        return ExportSummary(**record), request

    def _sweep_stale_siblings(self) -> None:
        """Drop what runs that died long ago left in other backfills' staging folders."""
        cutoff = time.time() - STALE_AFTER_SECONDS
        parent = FileStore(self._store.fs, self._store.root.rsplit("/", 1)[0])
        for sibling in parent.children(STAGING_PREFIX):
            if sibling.root == self._store.root:
                continue
            written = [sibling.modified(name) for name in sibling.names()]
            if all(moment is None or moment < cutoff for moment in written):
                sibling.remove_tree()


def staging_store(raw_events: FileStore, backfill_id: str) -> FileStore:
    """The backfill's shared staging folder beside the raw partitions."""
    return raw_events.child(f"{STAGING_PREFIX}{backfill_id}")


def _data_name(day: date) -> str:
    return f"{day}.jsonl.gz"


def _summary_name(day: date) -> str:
    return f"{day}.summary.json"
