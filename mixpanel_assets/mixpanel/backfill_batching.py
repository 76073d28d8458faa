"""Backfills in fewer requests: one Mixpanel export for a block of days of the same backfill.

A backfill launches one run per day, and Mixpanel allows 60 export queries an hour, so a year
asked day by day takes over six hours of quota. Instead, the days a backfill submitted are cut
into blocks of ``days_per_request`` consecutive days counted from its first day; whichever run of
a block comes first exports the whole block in one request, split into per-day files as it
streams, into a staging folder the backfill's runs share. Every run then publishes its own day
from there, so partitions, checks and downstream assets stay per day.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, RunsFilter

from mixpanel_assets.file_lock import exclusive_lock
from mixpanel_assets.mixpanel.export_client import (
    ExportQuery,
    ExportSummary,
    MixpanelExportClient,
)

BACKFILL_TAG = "dagster/backfill"
PARTITION_TAG = "dagster/partition"
# A backfill's staging folder outlives its runs only if a run died; sweep those after this long.
STALE_AFTER_SECONDS = 2 * 24 * 3600


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
    """Per-day export files of one backfill, shared by its runs under a file lock."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    @contextmanager
    def locked(self) -> Iterator[BackfillStaging]:
        with exclusive_lock(self._folder / ".lock"):
            yield self

    def has(self, day: date) -> bool:
        return self._summary_path(day).exists() and self._data_path(day).exists()

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
        partial = {day: self._folder / f".{day}.partial.jsonl.gz" for day in days}
        summaries = client.export_days_to_files(query, partial, day_of)
        for day, summary in summaries.items():
            os.replace(partial[day], self._data_path(day))
            record = {**asdict(summary), "event_counts": dict(summary.event_counts)}
            record["request"] = query.params(client.project_id)
            self._summary_path(day).write_text(json.dumps(record), encoding="utf-8")

    def take(self, day: date, destination: Path) -> tuple[ExportSummary, dict[str, str]]:
        """Move ``day``'s staged file to ``destination``; its summary and the request made."""
        record = json.loads(self._summary_path(day).read_text(encoding="utf-8"))
        request = record.pop("request")
        record["event_counts"] = Counter(record["event_counts"])
        os.replace(self._data_path(day), destination)
        self._summary_path(day).unlink()
        return ExportSummary(**record), request

    def _data_path(self, day: date) -> Path:
        return self._folder / f"{day}.jsonl.gz"

    def _summary_path(self, day: date) -> Path:
        return self._folder / f"{day}.summary.json"

    def _sweep_stale_siblings(self) -> None:
        cutoff = time.time() - STALE_AFTER_SECONDS
        for sibling in self._folder.parent.glob(".backfill-*"):
            if sibling != self._folder and sibling.stat().st_mtime < cutoff:
                shutil.rmtree(sibling, ignore_errors=True)
