"""The seconds each step of a finished run took, from its Dagster event log.

``python -m bench.step_times DAGSTER_HOME`` prints one JSON object: each step's key with its
seconds (start to success or failure), and ``run`` (the run's start to its end). It runs in its
own process after the ``dagster`` stage, so its import of Dagster counts in no stage's figures.
"""

from __future__ import annotations

import sys

import orjson
from dagster import DagsterEventType, DagsterInstance

_ENDS = (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE)
_RUN_ENDS = (DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE)


def step_seconds(instance: DagsterInstance) -> dict[str, float]:
    """Each step's seconds in the instance's only (or last) run, and the run's own."""
    run = instance.get_runs(limit=1)[0]
    starts: dict[str, float] = {}
    seconds: dict[str, float] = {}
    run_start = run_end = None
    for entry in instance.all_logs(run.run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.RUN_START:
            run_start = entry.timestamp
        elif event.event_type in _RUN_ENDS:
            run_end = entry.timestamp
        elif event.event_type == DagsterEventType.STEP_START and event.step_key:
            starts[event.step_key] = entry.timestamp
        elif event.event_type in _ENDS and event.step_key in starts:
            seconds[event.step_key] = round(entry.timestamp - starts[event.step_key], 2)
    if run_start is not None and run_end is not None:
        seconds["run"] = round(run_end - run_start, 2)
    return seconds


def main() -> int:
    with DagsterInstance.from_config(sys.argv[1]) as instance:
        sys.stdout.write(orjson.dumps(step_seconds(instance)).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
