"""``make demo``: the daily job for the last few closed days, offline, on the local sandbox.

Run it twice: the second run replays each day's batch, and the platform still holds every event
once. Design notes: docs/local-sandbox.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, ExecuteInProcessResult

from mixpanel_assets.pipeline import DAILY_JOB, build_definitions
from mixpanel_assets.projects import PROJECTS_VARIABLE, ProjectKeys, configured_projects
from mixpanel_assets.sandbox.local_sandbox import (
    EXAMPLE_PROJECTS_FILE,
    LocalSandbox,
    local_sandbox,
)

DEMO_DAYS = 3
DEMO_DATA_DIR = Path("data")
# Warnings and errors from the runs still show; step-by-step debug logs would bury the summary.
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def main() -> int:
    """Run the demo; its exit status."""
    parser = argparse.ArgumentParser(prog="python -m mixpanel_assets.sandbox.demo")
    parser.add_argument(
        "--projects",
        nargs="?",
        const=EXAMPLE_PROJECTS_FILE,
        type=Path,
        metavar="FILE",
        help="run every project of a projects file (default: the example one)",
    )
    args = parser.parse_args()
    os.environ.pop(PROJECTS_VARIABLE, None)  # the demo's own file, or none
    with local_sandbox(DEMO_DATA_DIR, projects_file=args.projects) as sandbox:
        os.environ.update(sandbox.environment())
        defs = build_definitions()
        projects = [spec.keys for spec in configured_projects(sandbox.start_date)]
        for keys in projects:
            emulator = sandbox.projects.get(keys.name or "", sandbox.mixpanel)
            label = f" ({keys.name}, project {emulator.project_id})" if keys.name else ""
            print(f"local sandbox: Mixpanel{label} {emulator.export_url}")
        print(f"local sandbox: AEP {sandbox.platform.url}")
        print("AEP schema and dataset, provisioned through the platform APIs:")
        for line in sandbox.provisioned.report():
            print(f"  {line}")
        print(f"AEP dataset id: {sandbox.dataset_id}\n")
        rows, failed = [], []
        with _instance() as instance:
            for keys in projects:
                job = defs.resolve_job_def(keys.named(DAILY_JOB))
                assert job.partitions_def is not None
                # The last closed days, then the open day (today): an intraday load of what
                # Mixpanel has processed so far; a later demo the same day loads only what is new.
                days = job.partitions_def.get_partition_keys()[-DEMO_DAYS - 1 :]
                print(f"running {job.name} for {', '.join(days)}")
                for day in days:
                    result = job.execute_in_process(
                        partition_key=day,
                        instance=instance,
                        raise_on_error=False,
                        run_config=RUN_CONFIG,
                    )
                    rows.append(_summary(keys, day, result))
                    if not result.success:
                        failed.append(f"{keys.name}/{day}" if keys.name else day)
        print()
        _print_table(rows)
        held_once = _report_platform(sandbox)
    if failed:
        print(f"\nFAILED: {', '.join(failed)} (see the run logs above)")
    return 0 if held_once and not failed else 1


def _instance() -> DagsterInstance:
    if not os.environ.get("DAGSTER_HOME"):
        home = Path(".dagster_home").resolve()
        home.mkdir(exist_ok=True)
        os.environ["DAGSTER_HOME"] = str(home)
    return DagsterInstance.get()


def _summary(keys: ProjectKeys, day: str, result: ExecuteInProcessResult) -> dict[str, Any]:
    def metadata(asset: str) -> dict[str, Any]:
        events = result.asset_materializations_for_node("__".join(keys.asset(asset).path))
        return {key: value.value for key, value in events[-1].metadata.items()} if events else {}

    raw, xdm, aep = (
        metadata(name)
        for name in ("mixpanel_raw_events", "xdm_experience_events", "aep_ingested_batches")
    )
    return {
        **({"project": keys.name} if keys.name else {}),
        "day": day,
        "exported": raw.get("dagster/row_count", "-"),
        "mapped": xdm.get("dagster/row_count", "-"),
        "duplicates": xdm.get("duplicates_dropped", "-"),
        "quarantined": xdm.get("quarantined", "-"),
        "ingested": aep.get("dagster/row_count", "-"),
        "batch": ",".join(aep.get("batch_ids", [])) or "-",
        "replaced": ",".join(aep.get("replaced_batch_ids", [])) or "-",
        "complete": {True: "yes", False: "no (open day)"}.get(aep.get("day_complete"), "-"),
    }


def _print_table(rows: list[dict[str, Any]]) -> None:
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(row[c])) for row in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns))


def _report_platform(sandbox: LocalSandbox) -> bool:
    records = sandbox.platform.dataset_records(sandbox.dataset_id)
    unique = records["_id"].nunique()
    print(
        f"\nAEP dataset {sandbox.dataset_id}: {len(records)} records from "
        f"{records['batch_id'].nunique()} live batches, {unique} distinct _id"
    )
    if unique != len(records):
        print("PROBLEM: some events are held more than once")
        return False
    print("every event is held exactly once")
    print(f"records (Parquet, a folder of parts per live batch): {sandbox.dataset_dir}")
    return True


if __name__ == "__main__":
    sys.exit(main())
