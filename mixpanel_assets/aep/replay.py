"""Which of a day's batches a new batch of that day must replace, once none is unfinished.

Design notes: docs/design-notes.md, `aep/replay.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mixpanel_assets.aep.client import FAILED, REPLACED, STALLED, SUCCEEDED, AEPClient
from mixpanel_assets.aep.errors import AEPError, AEPRefusal

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SettledDay:
    """A day's batches once settled: the live ones to replay and the unfinished ones aborted."""

    live: list[str]  # the batches a new batch of the day must replay, oldest first
    aborted: list[str]  # unfinished batches of dead runs, aborted now


def settle_day(
    client: AEPClient,
    *,
    dataset_id: str,
    tags: Mapping[str, str],
    known_batch_ids: Iterable[str],
    timeout_seconds: float,
    poll_seconds: float,
) -> SettledDay:
    """The day's live batches in ``dataset_id``, once its unfinished batches are settled.

    ``tags`` are the Catalog tags every batch of the day carries; ``known_batch_ids`` are the
    day's batches as Dagster and the manifest remember them.
    """
    views = {
        view["id"]: view
        for view in client.list_batches(dataset_id, tags=tags)
        if _of_the_day(view, dataset_id, tags)
    }
    for batch_id in known_batch_ids:
        if batch_id in views:
            continue
        try:
            view = client.get_batch(batch_id)
        except AEPRefusal as refusal:
            if refusal.status != 404:
                raise
            logger.warning("batch %s of the day is unknown to the Catalog: ignored", batch_id)
            continue
        if _of_the_day(view, dataset_id, tags):
            views[batch_id] = view
    live: list[str] = []
    aborted: list[str] = []
    for view in sorted(views.values(), key=lambda item: (item.get("created", 0), item["id"])):
        status = view.get("status")
        if status == "loading" and _aborted(client, view["id"]):
            aborted.append(view["id"])
            continue
        if status not in SUCCEEDED | FAILED | REPLACED:
            status = client.wait_for_batch(
                view["id"], timeout_seconds=timeout_seconds, poll_seconds=poll_seconds
            ).get("status")
        if status == STALLED:
            raise AEPError(
                f"batch {view['id']} of this day is 'stalled': AEP exhausted its retries but the "
                "batch may still go live. Abort or revert it in the AEP UI (Datasets > batch), "
                "then re-run the day."
            )
        if status in SUCCEEDED:
            live.append(view["id"])
    return SettledDay(live=live, aborted=aborted)


def _aborted(client: AEPClient, batch_id: str) -> bool:
    """True once aborted; False when AEP says the batch was completed and cannot be."""
    try:
        client.abort_batch(batch_id)
    except AEPRefusal as refusal:
        if refusal.status != 400:
            raise
        return False
    logger.info("aborted batch %s, left loading by an earlier run of the day", batch_id)
    return True


def _of_the_day(view: dict[str, Any], dataset_id: str, tags: Mapping[str, str]) -> bool:
    """True when the batch's own dataset and tags name this dataset, project and day.

    Whatever a Catalog filter returned (a Catalog may ignore ``tags``), a batch of another day,
    project or dataset must never be replayed: that would take its records out of the dataset.
    """
    if _dataset_of(view) != dataset_id:
        logger.warning("batch %s is not of dataset %s: ignored", view.get("id"), dataset_id)
        return False
    own = view.get("tags") or {}
    for name, value in tags.items():
        values = own.get(name)
        if value not in (values if isinstance(values, list) else [values]):
            logger.warning(
                "batch %s is not tagged %s=%s (its tags say %r): not of this day, ignored",
                view.get("id"),
                name,
                value,
                values,
            )
            return False
    return True


def _dataset_of(view: dict[str, Any]) -> str | None:
    for related in view.get("relatedObjects") or []:
        if related.get("type") == "dataSet":
            return related.get("id")
    return None
