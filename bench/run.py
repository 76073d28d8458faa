"""``make bench``: one synthetic day through each stage, beside the limits and a peer, N times.

Every stage runs in a fresh process, so its wall time and peak RSS are its own (mapping's RSS
adds its worker processes', one per core, each counted as big as the biggest): export (Mixpanel
emulator -> raw gzip file), mapping (raw -> XDM records and quarantine), upload (records ->
platform emulator batch, until it is processed), and ``dagster``: the day as a user runs it,
``dagster asset materialize`` of the three assets with their checks, process start-up included.
Beside them: ``curl`` reading the same export to /dev/null (the I/O limit of export) right after
export, and the orjson round trip (parse and serialise each line, read as the mapping reads it,
on as many processes as the mapping uses: the JSON limit of mapping) and the leanest mapping
(``lean_mapping``) right before mapping; after
all runs, the ``mixpanel-utils`` package exporting the same day from the same emulator. The
emulators run in this process. The chain runs ``--runs`` times (3 by default); the report gives
each run, the minimum, median and maximum, and checks the targets of issue 20 in every run.
Each report goes on top of ``bench/results.md`` (the history stays below it); the exit status is
1 when a target is missed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import queue
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

# Each stage imports what it needs itself: a stage's process must not pay for the others'
# libraries (pandas and pyarrow for the platform emulator, say) in its peak RSS.

RESULTS = Path(__file__).with_name("results.md")
Figures = dict[str, Any]
# Issue 20's targets, on this machine: the mapping's rate against the orjson round trip's on as
# many cores, the day as a user runs it at 1M events, and every stage's peak RSS.
MAPPING_SHARE_OF_ORJSON = 1 / 3
USER_RUN_SECONDS = 60.0
USER_RUN_EVENTS = 1_000_000
PEAK_RSS_MB = 300
_BLOCK_BYTES = 1 << 20  # decompressed bytes a round-trip worker gets at once, as mapping's chunks


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
    from mixpanel_assets.xdm.day_mapping import map_day, usable_cpus
    from mixpanel_assets.xdm.mapping import MappingSpec

    spec = MappingSpec(project_id=env["MIXPANEL_PROJECT_ID"], tenant_id=env["AEP_TENANT_ID"])
    workers = usable_cpus()
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
    """The floor of any mapping: each line read as the mapping reads it (ISA-L's gzip, blocks of
    lines to as many worker processes as the mapping uses), parsed and serialised once."""
    from isal import igzip

    from mixpanel_assets.xdm.day_mapping import usable_cpus

    workers = usable_cpus()
    context = multiprocessing.get_context("spawn")
    with (
        igzip.open(work / "raw.jsonl.gz", "rb") as raw,
        ProcessPoolExecutor(workers, mp_context=context) as pool,
    ):
        events = sum(pool.map(_round_trip_block, _blocks(raw), chunksize=1))
    return {"events": events, "worker_processes": workers}


def _lean_mapping(env: dict[str, str], day: str, work: Path) -> Figures:
    """The leanest mapping of the day (``bench/lean_mapping.py``), on the mapping's cores."""
    from bench.lean_mapping import lean_mapping
    from mixpanel_assets.xdm.day_mapping import usable_cpus

    workers = usable_cpus()
    events = lean_mapping(work / "raw.jsonl.gz", work / "lean.jsonl.gz", workers)
    return {"events": events, "worker_processes": workers}


def _blocks(raw: Any) -> Iterator[bytes]:
    rest = b""
    while block := raw.read(_BLOCK_BYTES):
        end = block.rfind(b"\n") + 1
        yield rest + block[:end]
        rest = block[end:]
    if rest:
        yield rest


def _round_trip_block(block: bytes) -> int:
    lines = 0
    for line in block.split(b"\n"):
        if line:
            orjson.dumps(orjson.loads(line))
            lines += 1
    return lines


def _dagster(env: dict[str, str], day: str, work: Path) -> Figures:
    """The day as a user runs it: the contract's command, in a fresh process, checks included."""
    home = work / f"dagster-home-{time.time_ns()}"
    home.mkdir()
    dagster = str(Path(sys.executable).with_name("dagster"))
    command = [dagster, "asset", "materialize", "-m", "mixpanel_assets.definitions"]
    command += ["--select", "mixpanel_raw_events*", "--partition", day]
    completed = subprocess.run(
        command,
        env={**env, "DAGSTER_HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode:
        raise SystemExit(f"dagster asset materialize failed:\n{completed.stderr[-3000:]}")
    return {"largest_process_only": True, "dagster_home": str(home)}


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
    figures["worker_processes_used"] = workers
    biggest_worker_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    figures["peak_rss_mb"] = _peak_rss_mb() + workers * biggest_worker_mb
    if figures.pop("largest_process_only", False):  # a command's own processes, one at a time
        figures["peak_rss_mb"] = max(_peak_rss_mb(), biggest_worker_mb)
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
    while True:  # a stage that dies puts nothing: stop, rather than wait for ever
        try:
            figures = results.get(timeout=1)
            break
        except queue.Empty:
            if not process.is_alive() and results.empty():
                failed = f"{stage.__name__} failed with exit code {process.exitcode}"
                raise SystemExit(failed) from None
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
    "dagster": _dagster,
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the day")
    parser.add_argument(
        "--stages",
        default="export,mapping,upload,dagster",
        help="comma-separated stages, in order (dagster: the three assets through the CLI)",
    )
    parser.add_argument("--runs", type=int, default=3, help="times the chain runs (default 3)")
    parser.add_argument(
        "--no-peers", action="store_true", help="skip curl, orjson, lean-mapping, mixpanel-utils"
    )
    parser.add_argument(
        "--intraday", action="store_true", help="intraday loads of an open day instead"
    )
    args = parser.parse_args()
    if args.intraday:
        from bench.intraday import main as intraday

        return intraday(args.events)
    stages = args.stages.split(",")
    unknown = [name for name in stages if name not in STAGES]
    if unknown or args.runs < 1 or args.events < 1:
        parser.error(f"--stages takes {', '.join(STAGES)}; --runs and --events at least 1")
    from mixpanel_assets.sandbox.local_sandbox import local_sandbox

    day = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    runs: list[dict[str, Figures]] = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        with local_sandbox(work / "data", events_per_day=args.events) as sandbox:
            env = sandbox.environment()
            for number in range(1, args.runs + 1):
                print(f"run {number} of {args.runs}...", flush=True)
                runs.append(_run(env, day, work, stages, args.events, peers=not args.no_peers))
            if not args.no_peers and "export" in stages:  # compared with our export, as curl is
                runs[0]["mixpanel-utils"] = _measure(_mixpanel_utils, env, day, work)
                _fill_day_size(runs[0], args.events)
    report = _report(runs, args.events)
    print(report)
    earlier = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
    RESULTS.write_text(f"{report}\n\n---\n\n{earlier}".rstrip() + "\n", encoding="utf-8")
    return 0 if "MISSED" not in report else 1


def _run(
    env: dict[str, str], day: str, work: Path, stages: list[str], events: int, *, peers: bool
) -> Figures:
    """Every stage and yardstick once, each given the day's event and byte counts."""
    rows: dict[str, Figures] = {}
    # Each yardstick runs next to what it measures, in the same spell of this shared machine's
    # speed (which drifts by a third within minutes): curl right after export, orjson right
    # before mapping.
    for name in stages:
        if name == "mapping" and peers:
            rows["orjson"] = _measure(_orjson_round_trip, env, day, work)
            rows["lean-mapping"] = _measure(_lean_mapping, env, day, work)
        before = _cpu_seconds()
        rows[name] = _measure(STAGES[name], env, day, work)
        # The local sandbox's own work meanwhile (its threads and validation workers here).
        rows[name]["sandbox_cpu_seconds"] = _cpu_seconds() - before - rows[name]["cpu_seconds"]
        if "dagster_home" in rows[name]:
            rows[name]["steps"] = _step_seconds(rows[name].pop("dagster_home"))
        if name == "export" and peers:
            rows["curl"] = _curl(env, day)
    _fill_day_size(rows, events)
    return rows


def _step_seconds(dagster_home: str) -> dict[str, float]:
    """Each step's seconds from the run's event log (read in a process of its own)."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench.step_times", dagster_home],
        capture_output=True,
        check=True,
        env={**os.environ, "DAGSTER_HOME": dagster_home},
    )
    return orjson.loads(completed.stdout)


def _fill_day_size(rows: dict[str, Figures], events: int) -> None:
    day_size = rows.get("export", {"events": events, "bytes": 0})
    for figures in rows.values():
        figures.setdefault("events", day_size["events"])
        figures.setdefault("bytes", day_size["bytes"])


def _report(runs: list[dict[str, Figures]], events: int) -> str:
    lines = [
        f"# Benchmark: one synthetic day of {events:,} events, {len(runs)} run(s)",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {_machine()}",
        "",
    ]
    for number, rows in enumerate(runs, start=1):
        lines += [f"## Run {number}", "", *_table(rows), ""]
        if "steps" in rows.get("dagster", {}):
            steps = rows["dagster"]["steps"]
            listed = ", ".join(f"{step} {seconds:.1f}" for step, seconds in steps.items())
            lines += [f"`dagster`'s steps (s, from the run's event log): {listed}", ""]
    if len(runs) > 1:
        lines += ["## Across the runs (seconds)", "", "| stage | min | median | max |"]
        lines.append("|---|---:|---:|---:|")
        for name in runs[0]:
            seconds = [rows[name]["seconds"] for rows in runs if name in rows]
            lines.append(
                f"| {name} | {min(seconds):.2f} | {statistics.median(seconds):.2f} | "
                f"{max(seconds):.2f} |"
            )
        lines.append("")
    lines += [
        "MB/s counts the day's decompressed JSON lines. CPU s is the user and system time of the",
        "stage's process and its worker processes (mapping's and orjson's, near twice their wall",
        "time, show both cores at work); the emulators' own work, in the benchmark's process, is",
        "not in it: sandbox CPU s is theirs (threads and validation workers) during the stage.",
        "`dagster` is `dagster asset materialize` of the three assets with their checks, process",
        "start-up included; its peak RSS is its largest process's, its steps' seconds come from",
        "the run's event log.",
        "",
        "## Targets (issue 20)",
        "",
    ]
    lines += [f"- {target}" for target in _targets(runs)]
    if all("lean-mapping" in rows and "mapping" in rows for rows in runs):
        lean = [_rate(rows, "lean-mapping") / _rate(rows, "orjson") for rows in runs]
        ours = [_rate(rows, "mapping") / _rate(rows, "lean-mapping") for rows in runs]
        lines += [
            "",
            "Beside the targets: the leanest mapping (`bench/lean_mapping.py`: the record's shape",
            "by dict displays, its digests, no conversion, check or set of keys) at",
            f"{_spread(lean, '{:.0%}')} of the orjson round trip; the mapping at",
            f"{_spread(ours, '{:.0%}')} of the leanest mapping's rate.",
        ]
    return "\n".join(lines)


def _rate(rows: Figures, name: str) -> float:
    return rows[name]["events"] / rows[name]["seconds"]


def _table(rows: dict[str, Figures]) -> list[str]:
    lines = [
        "| stage | events | seconds | CPU s | sandbox CPU s | events/s | MB/s | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, figures in rows.items():
        rate = figures["events"] / figures["seconds"]
        throughput = figures["bytes"] / 1e6 / figures["seconds"]
        rss, cpu = figures.get("peak_rss_mb"), figures.get("cpu_seconds")
        sandbox = figures.get("sandbox_cpu_seconds")
        lines.append(
            f"| {name} | {figures['events']:,} | {figures['seconds']:.2f} | "
            f"{f'{cpu:.1f}' if cpu is not None else '-'} | "
            f"{f'{sandbox:.1f}' if sandbox is not None else '-'} | "
            f"{rate:,.0f} | {throughput:.1f} | "
            f"{f'{rss:.0f}' if rss else '-'} |"
        )
    return lines


def _spread(values: list[float], form: str) -> str:
    if len(values) == 1:
        return form.format(values[0])
    low, middle, high = min(values), statistics.median(values), max(values)
    return f"min {form.format(low)}, median {form.format(middle)}, max {form.format(high)}"


def _targets(runs: list[dict[str, Figures]]) -> list[str]:
    """Each target, met only when every run meets it."""

    rate = _rate

    def every(name: str) -> list[Figures]:
        return [rows for rows in runs if name in rows]

    checks: list[tuple[str, bool]] = []
    if every("export") and every("curl"):
        ratios = [rate(rows, "export") / rate(rows, "curl") for rows in every("curl")]
        text = f"export at {_spread(ratios, '{:.0%}')} of curl's rate (target >= 80%)"
        checks.append((text, min(ratios) >= 0.8))
    if every("mapping") and every("orjson"):
        ratios = [rate(rows, "mapping") / rate(rows, "orjson") for rows in every("orjson")]
        cores = runs[0]["orjson"]["worker_processes_used"]
        text = (
            f"mapping at {_spread(ratios, '{:.0%}')} of the orjson round trip, both on {cores} "
            "cores (target >= 33%)"
        )
        checks.append((text, min(ratios) >= MAPPING_SHARE_OF_ORJSON))
    if every("dagster"):
        seconds = [rows["dagster"]["seconds"] for rows in every("dagster")]
        events = runs[0]["dagster"]["events"]
        spread = _spread(seconds, "{:.1f} s")
        text = f"the day as a user runs it (dagster, checks included): {spread}"
        if events >= USER_RUN_EVENTS:
            checks.append((f"{text} (target < 60 s at 1M events)", max(seconds) < USER_RUN_SECONDS))
        else:
            checks.append((f"{text} (the 60 s target is checked at 1M events)", True))
    for name in ("export", "mapping", "upload", "dagster"):
        if every(name):
            rss = max(rows[name]["peak_rss_mb"] for rows in every(name))
            checks.append((f"{name} peak RSS {rss:.0f} MB (target < 300 MB)", rss < PEAK_RSS_MB))
    first = runs[0]
    if "export" in first and "mixpanel-utils" in first:
        speed = rate(first, "export") / rate(first, "mixpanel-utils")
        memory = first["mixpanel-utils"]["peak_rss_mb"] / first["export"]["peak_rss_mb"]
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
