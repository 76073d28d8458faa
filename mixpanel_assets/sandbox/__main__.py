"""``make sandbox`` / ``make dev``: the local sandbox in the foreground, optionally with the UI.

Prints the two emulator URLs and the ``export`` lines that point the contract's variables at
them, so any tool can use the sandbox; with ``--dagster-dev`` also runs ``dagster dev`` with
those variables set. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path

from mixpanel_assets.sandbox.local_sandbox import local_sandbox


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m mixpanel_assets.sandbox")
    parser.add_argument("--data-dir", default="data", help="where partition files live")
    parser.add_argument("--events-per-day", type=int, default=400)
    parser.add_argument("--dagster-dev", action="store_true", help="also run `dagster dev`")
    args = parser.parse_args()
    with local_sandbox(Path(args.data_dir), events_per_day=args.events_per_day) as sandbox:
        environment = sandbox.environment()
        print(f"Mixpanel export emulator: {sandbox.mixpanel.export_url}")
        print(f"AEP platform emulator:    {sandbox.platform.url}")
        print("\n# point the contract's variables at the local sandbox:")
        for name, value in environment.items():
            print(f"export {name}={shlex.quote(value)}")
        sys.stdout.flush()
        try:
            if args.dagster_dev:
                return _dagster_dev(environment)
            threading.Event().wait()
        except KeyboardInterrupt:
            print("\nstopping the local sandbox")
    return 0


def _dagster_dev(environment: dict[str, str]) -> int:
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "dev", "-m", "mixpanel_assets.definitions"]
    process = subprocess.Popen(command, env={**os.environ, **environment})
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        return process.wait()


if __name__ == "__main__":
    sys.exit(main())
