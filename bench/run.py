"""``make bench``: time each stage of one synthetic day on the local sandbox.

Each stage runs in a fresh process, so its peak RSS is its own: export (Mixpanel emulator ->
raw gzip file), mapping (raw -> XDM records and quarantine), upload (records -> platform
emulator batch, until AEP-side processing finished). The emulators run in this process.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mixpanel_assets.aep.client import AEPClient
from mixpanel_assets.aep.day_batch import DayBatchRequest, load_day
from mixpanel_assets.mixpanel.export_client import ExportQuery, MixpanelExportClient
from mixpanel_assets.sandbox.local_sandbox import LocalSandbox, local_sandbox
from mixpanel_assets.xdm.day_mapping import map_day
from mixpanel_assets.xdm.mapping import MappingSpec


def _export(env: dict[str, str], day: str, work: Path) -> dict[str, Any]:
    client = MixpanelExportClient(
        project_id=env["MIXPANEL_PROJECT_ID"],
        username=env["MIXPANEL_SERVICE_ACCOUNT_USERNAME"],
        secret=env["MIXPANEL_SERVICE_ACCOUNT_SECRET"],
        export_url=env["MIXPANEL_EXPORT_URL"],
    )
    date = datetime.fromisoformat(day).date()
    summary = client.export_to_file(ExportQuery(date, date), work / "raw.jsonl.gz")
    return {"events": summary.line_count, "bytes": summary.byte_count}


def _map(env: dict[str, str], day: str, work: Path) -> dict[str, Any]:
    spec = MappingSpec(project_id=env["MIXPANEL_PROJECT_ID"], tenant_id=env["AEP_TENANT_ID"])
    stats = map_day(
        work / "raw.jsonl.gz", work / "xdm.jsonl.gz", work / "quarantine.jsonl.gz", spec, work
    )
    return {"events": stats.raw_lines, "bytes": (work / "raw.jsonl.gz").stat().st_size}


def _upload(env: dict[str, str], day: str, work: Path) -> dict[str, Any]:
    client = AEPClient(
        ims_url=env["AEP_IMS_URL"],
        platform_url=env["AEP_PLATFORM_URL"],
        client_id=env["AEP_CLIENT_ID"],
        client_secret=env["AEP_CLIENT_SECRET"],
        org_id=env["AEP_ORG_ID"],
        sandbox_name=env["AEP_SANDBOX_NAME"],
    )
    request = DayBatchRequest(
        dataset_id=env["AEP_DATASET_ID"],
        external_id=f"bench-{day}-{time.time_ns()}",
        tags={},
        predecessors=[],
        max_file_bytes=200_000_000,
        partial_ingestion_percent=0.0,
        timeout_seconds=3600.0,
        poll_seconds=0.1,
    )
    result = load_day(client, work / "xdm.jsonl.gz", request, work)
    return {"events": result.record_count, "bytes": result.bytes, "status": result.status}


def _run_stage(stage: Callable[..., dict[str, Any]], args: tuple[Any, ...], results: Any) -> None:
    started = time.perf_counter()
    figures = stage(*args)
    figures["seconds"] = time.perf_counter() - started
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results.put(figures)


def _measure(stage: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_run_stage, args=(stage, args, results))
    process.start()
    figures = results.get()
    process.join()
    if process.exitcode:
        raise SystemExit(f"{stage.__name__} failed with exit code {process.exitcode}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument("--events", type=int, default=20_000, help="events in the synthetic day")
    parser.add_argument(
        "--stages", default="export,mapping,upload", help="comma-separated stages to run, in order"
    )
    args = parser.parse_args()
    day = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        with local_sandbox(work / "data", events_per_day=args.events) as sandbox:
            _report(sandbox, day, work, args.stages.split(","))


STAGES: dict[str, Callable[..., dict[str, Any]]] = {
    "export": _export,
    "mapping": _map,
    "upload": _upload,
}


def _report(sandbox: LocalSandbox, day: str, work: Path, stages: list[str]) -> None:
    env = sandbox.environment()
    print(f"one synthetic day ({day}), {sandbox.mixpanel.events_per_day} events requested\n")
    print(
        f"{'stage':<10}{'events':>10}{'seconds':>10}{'events/s':>12}{'MB/s':>9}{'peak RSS MB':>13}"
    )
    total = 0.0
    for name in stages:
        figures = _measure(STAGES[name], env, day, work)
        total += figures["seconds"]
        rate = figures["events"] / figures["seconds"]
        throughput = figures["bytes"] / 1e6 / figures["seconds"]
        print(
            f"{name:<10}{figures['events']:>10}{figures['seconds']:>10.2f}{rate:>12,.0f}"
            f"{throughput:>9.1f}{figures['peak_rss_mb']:>13.0f}"
        )
    print(f"\nwhole chain: {total:.2f} s")
    print("(export MB/s counts decompressed bytes; mapping and upload, bytes read and sent)")


if __name__ == "__main__":
    main()
