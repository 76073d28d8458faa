"""``make bench BENCH_ARGS=--intraday``: intraday loads of an open day on the local sandbox.

One synthetic day, its clock moved by the benchmark: a first load at midday (half the day), then
loads late in the day a few minutes apart (small increments), then the close. Each load is a real
Dagster run of the three assets (in this process, on a throwaway instance). For each it reports
the increment's events and each step's time: our side's work (mapping, AEP) should follow the
increment, not the day. The latency bound of an event processed at t is t + the schedule's
interval + the visibility margin + the load's wall time.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("results-intraday.md")
# Hours of the day (on the benchmark's clock) at which the open day is loaded; 24.5 closes it.
LOAD_HOURS = (12.0, 22.0, 23.0, 23.05, 23.1, 24.5)
INTERVAL_MINUTES = 60


def run(events: int) -> str:
    from dagster import DagsterInstance, materialize

    from mixpanel_assets.aep.assets import AEP_BATCHES
    from mixpanel_assets.aep.resource import AEPResource
    from mixpanel_assets.intraday import clock
    from mixpanel_assets.intraday.ledger import VISIBILITY_MARGIN_MS
    from mixpanel_assets.mixpanel.assets import RAW_EVENTS
    from mixpanel_assets.pipeline import build_definitions
    from mixpanel_assets.sandbox.local_sandbox import local_sandbox
    from mixpanel_assets.xdm.assets import XDM_EVENTS

    warnings.filterwarnings("ignore")
    day = datetime.now(UTC).date() - timedelta(days=1)
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
    now = {"seconds": midnight + 12 * 3600}
    clock.now = lambda: datetime.fromtimestamp(now["seconds"], UTC)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        os.environ["DAGSTER_HOME"] = folder
        # The synthetic day's odd cases are about 1% of it, at the default limit: the bench
        # measures speed, so it allows more.
        mapping = Path(folder) / "mapping.yaml"
        shipped = Path(__file__).parents[1] / "mixpanel_assets" / "xdm" / "default_mapping.yaml"
        text = shipped.read_text(encoding="utf-8")
        mapping.write_text(
            text.replace("max_quarantined_share: 0.01", "max_quarantined_share: 0.05"), "utf-8"
        )
        os.environ["MIXPANEL_ASSETS_MAPPING"] = str(mapping)
        with local_sandbox(
            Path(folder) / "data", events_per_day=events, clock=lambda: now["seconds"]
        ) as sandbox:
            os.environ.update(sandbox.environment())
            defs = build_definitions()
            env = sandbox.environment()
            aep = AEPResource(
                ims_url=env["AEP_IMS_URL"],
                platform_url=env["AEP_PLATFORM_URL"],
                client_id=env["AEP_CLIENT_ID"],
                client_secret=env["AEP_CLIENT_SECRET"],
                org_id=env["AEP_ORG_ID"],
                dataset_id=env["AEP_DATASET_ID"],
                poll_seconds=0.05,
            )
            instance = DagsterInstance.ephemeral()
            for hour in LOAD_HOURS:
                now["seconds"] = midnight + hour * 3600
                started = time.perf_counter()
                result = materialize(
                    [*defs.assets, *defs.asset_checks],
                    partition_key=day.isoformat(),
                    instance=instance,
                    resources={**defs.resources, "aep": aep},
                    raise_on_error=True,
                )
                wall = time.perf_counter() - started
                steps = _step_seconds(result)
                raw = _metadata(result, RAW_EVENTS)
                batches = _metadata(result, AEP_BATCHES)
                rows.append(
                    {
                        "hour": hour,
                        "increment": raw["dagster/row_count"],
                        "day_live": batches["dagster/row_count"],
                        "wall": wall,
                        "export": steps.get(RAW_EVENTS, 0.0),
                        "mapping": steps.get(XDM_EVENTS, 0.0),
                        "aep": steps.get(AEP_BATCHES, 0.0),
                        "complete": batches["day_complete"],
                        "rows_per_event": batches["aep_rows_per_unique_event"],
                    }
                )
            live = sandbox.platform.dataset_records(sandbox.dataset_id)
            unique = live["_id"].is_unique
    return _report(events, rows, unique, VISIBILITY_MARGIN_MS / 60_000)


def _step_seconds(result: Any) -> dict[str, float]:
    return {
        event.step_key: event.event_specific_data.duration_ms / 1000
        for event in result.all_events
        if event.is_step_success
    }


def _metadata(result: Any, asset: str) -> dict[str, Any]:
    (event,) = result.asset_materializations_for_node(asset)
    return {key: value.value for key, value in event.metadata.items()}


def _report(events: int, rows: list[dict[str, Any]], unique: bool, margin: float) -> str:
    lines = [
        f"# Benchmark: intraday loads of an open day of {events:,} events",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Each row is one run of the three assets "
        "(step times from Dagster; export time includes the emulator filtering the whole day "
        "by processing time, which Mixpanel does on its side).",
        "",
        "| clock | increment events | live in AEP | run s | export s | mapping s | AEP s | "
        "day complete | AEP rows per event |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for row in rows:
        hour = row["hour"]
        label = f"{int(hour) % 24:02d}:{round(hour % 1 * 60):02d}" + (
            " (+1 d)" if hour >= 24 else ""
        )
        lines.append(
            f"| {label} | {row['increment']:,} | {row['day_live']:,} | {row['wall']:.2f} | "
            f"{row['export']:.2f} | {row['mapping']:.2f} | {row['aep']:.2f} | "
            f"{row['complete']} | {row['rows_per_event']} |"
        )
    late = [row for row in rows if 23 <= row["hour"] < 24]
    worst = max(row["wall"] for row in rows if row["hour"] < 24)
    lines += [
        "",
        f"- every `_id` live once after the close: {unique}",
        f"- latency bound with the default {INTERVAL_MINUTES} min interval: an event processed at "
        f"t is live by t + {INTERVAL_MINUTES} min + {margin:.0f} min + {worst:.1f} s "
        "(the slowest intraday load here)",
    ]
    if late and rows[0]["increment"]:
        first = rows[0]
        per_event = (first["mapping"] + first["aep"]) / first["increment"]
        for row in late:
            ours = row["mapping"] + row["aep"]
            lines.append(
                f"- late increment of {row['increment']:,} events: mapping + AEP {ours:.2f} s "
                f"(the midday load's rate would give {per_event * row['increment']:.2f} s; "
                f"the whole day's {per_event * events:.2f} s)"
            )
    return "\n".join(lines)


def main(events: int) -> int:
    report = run(events)
    print(report)
    RESULTS.write_text(report + "\n", encoding="utf-8")
    return 0
