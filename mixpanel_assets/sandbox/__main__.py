"""``make sandbox`` / ``make dev``: the local sandbox in the foreground, optionally with the UI.

Prints the two emulator URLs and the ``export`` lines that point the contract's variables at
them, so any tool can use the sandbox; with ``--dagster-dev`` also runs ``dagster dev`` with
those variables set. Ctrl-C stops everything. ``--projects [FILE]`` serves every project of a
projects file (default: the example one), a Mixpanel emulator each.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

from mixpanel_assets.projects import PROJECTS_VARIABLE
from mixpanel_assets.sandbox.local_sandbox import EXAMPLE_PROJECTS_FILE, local_sandbox


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m mixpanel_assets.sandbox")
    parser.add_argument("--data-dir", default="data", help="where partition files live")
    parser.add_argument("--events-per-day", type=int, default=400)
    parser.add_argument("--dagster-dev", action="store_true", help="also run `dagster dev`")
    parser.add_argument(
        "--projects",
        nargs="?",
        const=EXAMPLE_PROJECTS_FILE,
        type=Path,
        metavar="FILE",
        help="serve every project of a projects file (default: the example one)",
    )
    args = parser.parse_args()
    # `kill` (SIGTERM) stops the sandbox and `dagster dev` as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    os.environ.pop(PROJECTS_VARIABLE, None)  # the sandbox's own file, or none
    with local_sandbox(
        Path(args.data_dir), events_per_day=args.events_per_day, projects_file=args.projects
    ) as sandbox:
        environment = sandbox.environment()
        for name, emulator in sandbox.projects.items():
            print(f"Mixpanel export emulator ({name}): {emulator.export_url}")
        if not sandbox.projects:
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
    # `dagster dev`, saying which dagster.yaml configures the instance (see dagster_dev).
    command = [sys.executable, "-m", "mixpanel_assets.sandbox.dagster_dev", "dev"]
    command += ["-w", "workspace.yaml"]
    # Started in the background, this process may have inherited an ignored SIGINT; give
    # dagster dev its default handling back so that it can be stopped cleanly.
    process = subprocess.Popen(
        command,
        env={**os.environ, **environment},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        return process.wait()
    except KeyboardInterrupt:
        # dagster dev shuts its webserver, daemon and code servers down cleanly on SIGINT.
        process.send_signal(signal.SIGINT)
        try:
            return process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()


if __name__ == "__main__":
    sys.exit(main())
