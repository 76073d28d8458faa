"""The checks that stop a bad day of ``xdm_experience_events`` before it reaches AEP."""

from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import orjson
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    MetadataValue,
    TimeWindowPartitionsDefinition,
    asset_check,
)
from isal import igzip

from mixpanel_assets.intraday.seeding import ids_live_in_earlier_loads
from mixpanel_assets.mixpanel.assets import RAW_EVENTS
from mixpanel_assets.projects import FLAT, ProjectKeys
from mixpanel_assets.storage import PartitionFiles, PartitionFolder
from mixpanel_assets.xdm.assets import XDM_EVENTS
from mixpanel_assets.xdm.check_facts import (
    EXAMPLES_SHOWN,
    FACTS,
    duplicate_event_ids,
    missing_required,
    stream_sha256,
)

# Where a check's figures came from (its ``judged_from`` metadata).
FROM_FACTS = "facts gathered while mapping (the file's SHA-256 matches)"
FROM_FILE = "the file, read again"
# The event-time check wants this many live (not imported) events before it judges a day.
MIN_FRESH_EVENTS = 20
# UTC offsets of at least an hour, in minutes: whole and half hours (India +5:30, Newfoundland
# -3:30) and the three quarter-hour zones (Nepal +5:45, Eucla +8:45, Chatham +12:45).
UTC_OFFSETS_MINUTES = frozenset(
    sign * minutes
    for sign in (1, -1)
    for minutes in (*range(60, 14 * 60 + 1, 30), 5 * 60 + 45, 8 * 60 + 45, 12 * 60 + 45)
)
# Live events reach Mixpanel within seconds; a median lag this close to an offset is the offset.
OFFSET_TOLERANCE_MINUTES = 5


def build_xdm_checks(
    partitions_def: TimeWindowPartitionsDefinition, project: ProjectKeys = FLAT
) -> Sequence[AssetChecksDefinition]:
    """The asset checks of ``project``'s ``xdm_experience_events``."""
    files_key = project.named("partition_files")

    @asset_check(
        asset=project.asset(XDM_EVENTS),
        required_resource_keys={files_key},
        name="required_xdm_fields",
        partitions_def=partitions_def,
        blocking=True,
        description="Every record has _id, an RFC 3339 timestamp in the past and one primary "
        "identity, and no empty values (walked in the records the mapping validated in full, "
        "which writes none: records_walked_for_empty_values); the file holds as many records "
        "as the manifest says. Blocking: a bad day never reaches AEP.",
    )
    def required_xdm_fields(context: AssetCheckExecutionContext) -> AssetCheckResult:
        partition_files: PartitionFiles = project.resource(context, "partition_files")
        folder = partition_files.folder(XDM_EVENTS, context.partition_key)
        problems: list[str] = []
        problem_count = records = 0
        now = datetime.now(UTC)
        manifest = folder.manifest()
        facts = _facts_of(context, folder, manifest, "events")
        if facts is not None:
            records, problem_count = facts["records"], facts["records_with_problems"]
            problems = facts["problem_examples"]
            walked = facts.get("records_walked_for_empty_values", records)  # older: all
        else:
            with folder.open("events", manifest) as stored, igzip.open(stored, "rb") as lines:
                for records, line in enumerate(lines, start=1):
                    missing = missing_required(orjson.loads(line), now)
                    if missing:
                        problem_count += 1
                        if len(problems) < EXAMPLES_SHOWN:
                            problems.append(f"record {records}: {missing}")
            walked = records
        expected = manifest["records"]
        return AssetCheckResult(
            passed=problem_count == 0 and records == expected,
            metadata={
                "partition": context.partition_key,
                "records_read": records,
                "records_in_manifest": expected,
                "records_with_problems": problem_count,
                # The others hold none by the mapping's construction (``map_event``).
                "records_walked_for_empty_values": walked,
                "examples": MetadataValue.json(problems),
                "judged_from": FROM_FILE if facts is None else FROM_FACTS,
            },
        )

    @asset_check(
        asset=project.asset(XDM_EVENTS),
        required_resource_keys={files_key},
        name="unique_event_ids",
        partitions_def=partitions_def,
        blocking=True,
        description="No two records of the day share an _id (AEP Profile keeps one event per "
        "_id). Streams the file against an on-disk set, so memory stays flat.",
    )
    def unique_event_ids(context: AssetCheckExecutionContext) -> AssetCheckResult:
        partition_files: PartitionFiles = project.resource(context, "partition_files")
        folder = partition_files.folder(XDM_EVENTS, context.partition_key)
        manifest = folder.manifest()
        facts = _facts_of(context, folder, manifest, "events")
        live_before, live_examples = 0, []
        with ExitStack() as stack:
            if facts is not None:
                records, duplicates = facts["records"], facts["repeated_ids"]
                examples = facts["repeated_examples"]
            else:
                events = stack.enter_context(folder.local_copy("events", manifest))
                work_dir = stack.enter_context(folder.staging())
                records, duplicates, examples = duplicate_event_ids(
                    events, work_dir, EXAMPLES_SHOWN
                )
            if manifest.get("intraday_load") is not None:
                # An open day's load: its _ids must also be new to the day's earlier loads.
                if facts is not None:
                    events = stack.enter_context(folder.local_copy("events", manifest))
                live_before, live_examples = ids_live_in_earlier_loads(
                    partition_files, context.partition_key, manifest, events, EXAMPLES_SHOWN
                )
        return AssetCheckResult(
            passed=duplicates == 0 and live_before == 0,
            metadata={
                "partition": context.partition_key,
                "records_read": records,
                "repeated_ids": duplicates,
                "ids_live_from_earlier_loads": live_before,
                "examples": MetadataValue.json(examples + live_examples),
                "judged_from": FROM_FILE if facts is None else FROM_FACTS,
            },
        )

    @asset_check(
        asset=project.asset(XDM_EVENTS),
        required_resource_keys={files_key},
        name="counts_reconcile",
        partitions_def=partitions_def,
        blocking=True,
        additional_deps=[project.asset(RAW_EVENTS)],
        description="Every exported line is accounted for: raw lines = XDM records + "
        "duplicates dropped + quarantined, the quarantine file holds every quarantined line, "
        "and the mapping read the current raw export.",
    )
    def counts_reconcile(context: AssetCheckExecutionContext) -> AssetCheckResult:
        partition_files: PartitionFiles = project.resource(context, "partition_files")
        raw = partition_files.folder(RAW_EVENTS, context.partition_key).manifest()
        folder = partition_files.folder(XDM_EVENTS, context.partition_key)
        xdm = folder.manifest()
        facts = _facts_of(context, folder, xdm, "quarantine")
        if facts is not None:
            quarantine_lines = facts["quarantine_lines"]
        else:
            with folder.open("quarantine", xdm) as stored, igzip.open(stored, "rb") as lines:
                quarantine_lines = sum(1 for _ in lines)
        accounted = xdm["records"] + xdm["duplicates_dropped"] + xdm["quarantined"]
        return AssetCheckResult(
            passed=raw["line_count"] == accounted
            and quarantine_lines == xdm["quarantined"]
            and raw["sha256"] == xdm["raw_sha256"],
            metadata={
                "partition": context.partition_key,
                "raw_lines": raw["line_count"],
                "xdm_records": xdm["records"],
                "duplicates_dropped": xdm["duplicates_dropped"],
                "quarantined": xdm["quarantined"],
                "quarantine_file_lines": quarantine_lines,
                "same_raw_export": raw["sha256"] == xdm["raw_sha256"],
                "judged_from": FROM_FILE if facts is None else FROM_FACTS,
            },
        )

    @asset_check(
        asset=project.asset(XDM_EVENTS),
        required_resource_keys={files_key},
        name="quarantine_share",
        partitions_def=partitions_def,
        blocking=True,
        description="The day's quarantined share of raw lines is at most the mapping's "
        "max_quarantined_share (default 1%). Blocking: a day that lost more than that to the "
        "quarantine is not loaded until someone looks.",
    )
    def quarantine_share(context: AssetCheckExecutionContext) -> AssetCheckResult:
        partition_files: PartitionFiles = project.resource(context, "partition_files")
        folder = partition_files.folder(XDM_EVENTS, context.partition_key)
        xdm = folder.manifest()
        limit = xdm["max_quarantined_share"]  # the limit the day was mapped under
        # An open day is judged over its loads so far (a partition mapped before intraday loads
        # existed has only its own counts).
        raw_lines = xdm.get("day_raw_lines", xdm["raw_lines"])
        quarantined = xdm.get("day_quarantined", xdm["quarantined"])
        # A correctly rounded division: exactly 1 line in 100 equals the literal 0.01.
        share = quarantined / raw_lines if raw_lines else 0.0
        return AssetCheckResult(
            passed=share <= limit,
            metadata={
                "partition": context.partition_key,
                "quarantined": quarantined,
                "raw_lines": raw_lines,
                "quarantined_share": share,
                "max_quarantined_share": limit,
                "quarantine_reasons": MetadataValue.json(xdm["quarantine_reasons"]),
                "quarantine_file": MetadataValue.path(folder.location("quarantine", xdm)),
            },
            description=None
            if share <= limit
            else f"{share:.2%} of the day's lines were quarantined, above the "
            f"{limit:.2%} allowed (max_quarantined_share in {xdm['mapping_file']}); "
            "the quarantine file holds each line with its reasons.",
        )

    @asset_check(
        asset=project.asset(XDM_EVENTS),
        required_resource_keys={files_key},
        name="event_time_offset",
        partitions_def=partitions_def,
        blocking=False,
        description="Warns when the day's live events were processed by Mixpanel a whole "
        "timezone offset after (or before) their time: the sign of a wrong MIXPANEL_EVENT_TIME "
        "or MIXPANEL_PROJECT_TIMEZONE. A warning only; it never blocks the day.",
    )
    def event_time_offset(context: AssetCheckExecutionContext) -> AssetCheckResult:
        partition_files: PartitionFiles = project.resource(context, "partition_files")
        manifest = partition_files.folder(XDM_EVENTS, context.partition_key).manifest()
        # Partitions mapped before this check existed carry no lag summary: nothing to judge.
        lag = manifest.get("processing_lag", {"fresh_events": 0, "median_minutes": None})
        offset = suspected_time_offset_minutes(lag["fresh_events"], lag["median_minutes"])
        return AssetCheckResult(
            passed=offset is None,
            severity=AssetCheckSeverity.WARN,
            metadata={
                "partition": context.partition_key,
                "fresh_events": lag["fresh_events"],
                "median_processing_lag_minutes": lag["median_minutes"],
                "suspected_offset_minutes": offset,
            },
            description=None if offset is None else _offset_advice(offset),
        )

    return [
        required_xdm_fields,
        unique_event_ids,
        counts_reconcile,
        quarantine_share,
        event_time_offset,
    ]


def suspected_time_offset_minutes(fresh_events: int, median_lag_minutes: int | None) -> int | None:
    """The UTC offset (minutes) that the median processing lag of live events looks like.

    None when it looks like an ordinary lag (or there are too few events to tell).
    """
    if median_lag_minutes is None or fresh_events < MIN_FRESH_EVENTS:
        return None
    distance, offset = min(
        (abs(median_lag_minutes - offset), offset) for offset in UTC_OFFSETS_MINUTES
    )
    return offset if distance <= OFFSET_TOLERANCE_MINUTES else None


def _offset_advice(offset_minutes: int) -> str:
    hours, minutes = divmod(abs(offset_minutes), 60)
    shift = f"{hours} h" + (f" {minutes} min" if minutes else "")
    side = "after" if offset_minutes > 0 else "before"
    return (
        f"Mixpanel processed the day's live events a median {shift} {side} their time: "
        "'time' looks read in the wrong timezone. If MIXPANEL_EVENT_TIME is utc (the default), "
        "the project was probably created before 2023 and stores local wall-clock time: set "
        "MIXPANEL_EVENT_TIME=project_local and MIXPANEL_PROJECT_TIMEZONE to the zone of the "
        "Mixpanel project's settings. If it is already project_local, either "
        "MIXPANEL_PROJECT_TIMEZONE differs from that zone, or the project stores UTC: set "
        "MIXPANEL_EVENT_TIME=utc. Changing MIXPANEL_EVENT_TIME changes the partitions' days "
        "(UTC days for utc, project days for project_local): follow docs/upgrading.md, then "
        "re-run the days."
    )


def _facts_of(
    context: AssetCheckExecutionContext,
    folder: PartitionFolder,
    manifest: dict[str, Any],
    role: str,
) -> dict[str, Any] | None:
    """The manifest's check facts if they were taken from the ``role`` file it names now (its
    SHA-256, of the stored bytes, matches); else None, and the file is to be judged again."""
    facts = manifest.get(FACTS)
    if not facts:
        return None
    with folder.open(role, manifest) as stored:
        digest = stream_sha256(stored)
    if digest != facts.get(f"{role}_sha256"):
        context.log.warning(
            f"the {role} file is not the one the mapping wrote its check facts for "
            f"(SHA-256 {digest}): judging the file itself"
        )
        return None
    return facts
