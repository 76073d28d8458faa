"""``make bench``: one synthetic day through each stage, beside the limits and a peer.

Every stage runs in a fresh process, so its wall time and peak RSS are its own (mapping's RSS
adds its worker processes', one per core, each counted as big as the biggest): export (Mixpanel
emulator -> raw gzip file), mapping (raw -> XDM records and quarantine), upload (records ->
platform emulator batch, until it is processed). Beside them, in the same run: ``curl`` reading
the same export to /dev/null (the I/O limit of export) right after export, a bare orjson
loads-and-dumps of the same lines, read as the mapping reads them (the JSON limit of mapping),
right before mapping, and, after all of ours, the ``mixpanel-utils`` package exporting the same
day from the same emulator. The emulators run in this process. Results go to
``bench/results.md``; the exit status is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

# Each stage imports what it needs itself: a stage's process must not pay for the others'
# libraries (pandas and pyarrow for the platform emulator, say) in its peak RSS.

RESULTS = Path(__file__).with_name("results.md")
Figures = dict[str, Any]


def _export(env: dict[str, str], day: str, work: Path) -> Figures:
    from mixpanel_assets.mixpanel.export_client import ExportQuery, MixpanelExportClient

    client = MixpanelExportClient(
        project_id=env["MIXPANEL_PROJECT_ID"],
        username=env["MIXPANEL_SERVICE_ACCOUNT_USERNAME"],
        secret=env["MIXPANEL_SERVICE_ACCOUNT_SECRET"],
        export_url=env["MIXPANEL_EXPORT_URL"],
    )
    export_day = datetime.fromisoformat(day).date()
    summary = client.export_to_file(ExportQuery(export_day, export_day), work / "raw.jsonl.gz")
    return {"events": summary.line_count, "bytes": summary.byte_count}


def _map(env: dict[str, str], day: str, work: Path) -> Figures:
    from mixpanel_assets.xdm.day_mapping import map_day
    from mixpanel_assets.xdm.mapping import MappingSpec

    spec = MappingSpec(project_id=env["MIXPANEL_PROJECT_ID"], tenant_id=env["AEP_TENANT_ID"])
    workers = os.cpu_count() or 1
    stats = map_day(
        work / "raw.jsonl.gz",
        work / "xdm.jsonl.gz",
        work / "quarantine.jsonl.gz",
        spec,
        work,
        workers=workers,
    )
    return {"events": stats.raw_lines, "worker_processes": workers}


def _upload(env: dict[str, str], day: str, work: Path) -> Figures:
    from mixpanel_assets.aep.client import AEPClient
    from mixpanel_assets.aep.day_batch import DayBatchRequest, load_day

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
    return {"events": result.record_count, "bytes": result.bytes}


def _orjson_round_trip(env: dict[str, str], day: str, work: Path) -> Figures:
    """The floor of any mapping: read each line as the mapping does (ISA-L's gzip, a third of
    zlib's CPU here), parse and serialise it once, nothing else."""
    from isal import igzip

    events = 0
    with igzip.open(work / "raw.jsonl.gz", "rb") as lines:
        for line in lines:
            orjson.dumps(orjson.loads(line))
            events += 1
    return {"events": events}


def _mixpanel_utils(env: dict[str, str], day: str, work: Path) -> Figures:
    """The peer: mixpanel-utils' export_events, as its README shows it, from the same emulator."""
    from mixpanel_utils import MixpanelUtils

    peer = MixpanelUtils(
        env["MIXPANEL_SERVICE_ACCOUNT_SECRET"],
        service_account_username=env["MIXPANEL_SERVICE_ACCOUNT_USERNAME"],
        project_id=env["MIXPANEL_PROJECT_ID"],
        timeout=600,
    )
    peer.raw_api = env["MIXPANEL_EXPORT_URL"].removesuffix("/2.0/export")
    target = work / "peer.json"
    peer.export_events(str(target), {"from_date": day, "to_date": day}, add_gzip_header=True)
    with target.open("rb") as exported:
        events = len(orjson.loads(exported.read()))
    return {"events": events}


def _run_stage(stage: Callable[..., Figures], args: tuple[Any, ...], results: Any) -> None:
    started, started_cpu = time.perf_counter(), _cpu_seconds()
    figures = stage(*args)
    figures["seconds"] = time.perf_counter() - started
    figures["cpu_seconds"] = _cpu_seconds() - started_cpu
    # A stage's worker processes count too: at most each as big as the biggest of them.
    workers = figures.pop("worker_processes", 0)
    biggest_worker_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    figures["peak_rss_mb"] = _peak_rss_mb() + workers * biggest_worker_mb
    results.put(figures)


def _cpu_seconds() -> float:
    """User and system time of this process and of its worker processes that have ended."""
    own, workers = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime


def _peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM; ru_maxrss would count the parent's, kept over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(stage: Callable[..., Figures], *args: Any) -> Figures:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_run_stage, args=(stage, args, results))
    process.start()
    figures = results.get()
    process.join()
    if process.exitcode:
        raise SystemExit(f"{stage.__name__} failed with exit code {process.exitcode}")
    return figures


def _curl(env: dict[str, str], day: str) -> Figures:
    curl = shutil.which("curl")
    if curl is None:
        raise SystemExit("curl is needed for the export comparison (apt-get install curl)")
    url = f"{env['MIXPANEL_EXPORT_URL']}?project_id={env['MIXPANEL_PROJECT_ID']}"
    url += f"&from_date={day}&to_date={day}"
    user = f"{env['MIXPANEL_SERVICE_ACCOUNT_USERNAME']}:{env['MIXPANEL_SERVICE_ACCOUNT_SECRET']}"
    started = time.perf_counter()
    subprocess.run(
        [curl, "-sSf", "-o", "/dev/null", "-H", "Accept-Encoding: gzip", "-u", user, url],
        check=True,
    )
    return {"seconds": time.perf_counter() - started}


STAGES: dict[str, Callable[..., Figures]] = {
    "export": _export,
    "mapping": _map,
    "upload": _upload,
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the day")
    parser.add_argument(
        "--stages", default="export,mapping,upload", help="comma-separated stages, in order"
    )
    parser.add_argument("--no-peers", action="store_true", help="skip curl, orjson, mixpanel-utils")
    parser.add_argument(
        "--intraday", action="store_true", help="intraday loads of an open day instead"
    )
    args = parser.parse_args()
    if args.intraday:
        from bench.intraday import main as intraday

        return intraday(args.events)
    from mixpanel_assets.sandbox.local_sandbox import local_sandbox

    day = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        with local_sandbox(work / "data", events_per_day=args.events) as sandbox:
            rows = _run(sandbox, day, work, args.stages.split(","), peers=not args.no_peers)
    report = _report(rows, args.events)
    print(report)
    RESULTS.write_text(report + "\n", encoding="utf-8")
    return 0 if "MISSED" not in report else 1


def _run(
    sandbox: Any, day: str, work: Path, stages: list[str], *, peers: bool
) -> dict[str, Figures]:
    """Every stage and peer, each given the day's event and byte counts from the export."""
    env = sandbox.environment()
    rows: dict[str, Figures] = {}
    # Each yardstick runs next to what it measures, in the same spell of this shared machine's
    # speed (which drifts by a third within minutes): curl right after export, orjson right
    # before mapping; mixpanel-utils, the longest, after all of ours.
    for name in stages:
        if name == "mapping" and peers:
            rows["orjson"] = _measure(_orjson_round_trip, env, day, work)
        rows[name] = _measure(STAGES[name], env, day, work)
        if name == "export" and peers:
            rows["curl"] = _curl(env, day)
    if peers and "export" in rows:  # compared with our export, as curl is
        rows["mixpanel-utils"] = _measure(_mixpanel_utils, env, day, work)
    day_size = rows.get("export", {"events": 0, "bytes": 0})
    for figures in rows.values():
        figures.setdefault("events", day_size["events"])
        figures.setdefault("bytes", day_size["bytes"])
    return rows


def _report(rows: dict[str, Figures], events: int) -> str:
    lines = [
        f"# Benchmark: one synthetic day of {events:,} events",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {_machine()}",
        "",
        "| stage | events | seconds | CPU s | events/s | MB/s | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, figures in rows.items():
        rate = figures["events"] / figures["seconds"]
        throughput = figures["bytes"] / 1e6 / figures["seconds"]
        rss, cpu = figures.get("peak_rss_mb"), figures.get("cpu_seconds")
        lines.append(
            f"| {name} | {figures['events']:,} | {figures['seconds']:.2f} | "
            f"{f'{cpu:.1f}' if cpu is not None else '-'} | {rate:,.0f} | {throughput:.1f} | "
            f"{f'{rss:.0f}' if rss else '-'} |"
        )
    lines += [
        "",
        "MB/s counts the day's decompressed JSON lines. CPU s is the user and system time of the",
        "stage's process and its worker processes (mapping's, near twice its wall time, shows both",
        "cores at work); the emulators' own work, in the benchmark's process, is not in it.",
        "",
        "## Targets",
        "",
    ]
    lines += [f"- {target}" for target in _targets(rows)]
    return "\n".join(lines)


def _targets(rows: dict[str, Figures]) -> list[str]:
    def rate(name: str) -> float:
        return rows[name]["events"] / rows[name]["seconds"]

    checks: list[tuple[str, bool]] = []
    if "export" in rows and "curl" in rows:
        ratio = rate("export") / rate("curl")
        checks.append((f"export at {ratio:.0%} of curl's rate (target >= 80%)", ratio >= 0.8))
    if "mapping" in rows:
        checks.append(
            (
                f"mapping at {rate('mapping'):,.0f} events/s (target >= 150,000)",
                rate("mapping") >= 150_000,
            )
        )
        if "orjson" in rows:
            ratio = rate("mapping") / rate("orjson")
            checks.append(
                (f"mapping at {ratio:.0%} of the orjson round trip (target >= 33%)", ratio >= 1 / 3)
            )
    for name in ("export", "mapping", "upload"):
        if name in rows:
            rss = rows[name]["peak_rss_mb"]
            checks.append((f"{name} peak RSS {rss:.0f} MB (target < 300 MB)", rss < 300))
    if all(name in rows for name in STAGES) and rows["export"]["events"] >= 1_000_000:
        total = sum(rows[name]["seconds"] for name in STAGES)
        checks.append((f"whole chain {total:.1f} s (target < 60 s for 1M events)", total < 60))
    if "export" in rows and "mixpanel-utils" in rows:
        speed = rate("export") / rate("mixpanel-utils")
        memory = rows["mixpanel-utils"]["peak_rss_mb"] / rows["export"]["peak_rss_mb"]
        checks.append((f"export {speed:.1f}x mixpanel-utils' speed (target > 1x)", speed > 1))
        checks.append(
            (f"mixpanel-utils needs {memory:.1f}x our memory (target >= 10x)", memory >= 10)
        )
    return [f"{'met' if passed else 'MISSED'}: {text}" for text, passed in checks]


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, Python "
        f"{platform.python_version()} on {platform.system()} {platform.machine()}"
    )


if __name__ == "__main__":
    sys.exit(main())
