"""A killed run's mapping workers exit with it instead of waiting forever for chunks."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# A run mapping a day whose raw file (a FIFO) stalls half way: its workers wait for chunks.
RUN = """
import gzip, multiprocessing, os, sys, threading, time
import orjson
from pathlib import Path
from mixpanel_assets.xdm.day_mapping import map_day
from mixpanel_assets.xdm.mapping import MappingSpec

folder = Path(sys.argv[1])
fifo = folder / "raw.jsonl.gz"
os.mkfifo(fifo)
now = int(time.time())

def feed():
    lines = b"".join(
        orjson.dumps({"event": "E", "properties": {"time": now - 86400 + index,
        "distinct_id": f"u{index}", "$insert_id": f"i{index}", "note": os.urandom(300).hex()}})
        + b"\\n"
        for index in range(12000)
    )
    writer = open(fifo, "wb")
    writer.write(gzip.compress(lines)[:-4000])  # most of the day, then nothing more
    writer.flush()
    time.sleep(3600)

threading.Thread(target=feed, daemon=True).start()
spec = MappingSpec(project_id="1", tenant_id="acme")
threading.Thread(
    target=map_day,
    args=(fifo, folder / "events.gz", folder / "bad.gz", spec, folder),
    kwargs={"workers": 2},
    daemon=True,
).start()
while len(multiprocessing.active_children()) < 2:
    time.sleep(0.1)
print(" ".join(str(child.pid) for child in multiprocessing.active_children()), flush=True)
time.sleep(3600)
"""


def _running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper has exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_killed_run_takes_its_mapping_workers_with_it(tmp_path: Path) -> None:
    run = subprocess.Popen(
        [sys.executable, "-c", RUN, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    workers: list[int] = []
    guard = threading.Timer(60, run.kill)  # never hang the suite if the run never starts
    guard.start()
    try:
        assert run.stdout is not None
        workers = [int(pid) for pid in run.stdout.readline().split()]
        assert len(workers) == 2 and all(map(_running, workers))
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        deadline = time.monotonic() + 15
        while any(map(_running, workers)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(map(_running, workers)), "the workers outlived the killed run"
    finally:
        guard.cancel()
        run.kill()
        for pid in workers:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
