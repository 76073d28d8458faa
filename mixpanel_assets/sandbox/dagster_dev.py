"""``dagster dev`` as ``make dev`` runs it, saying truly which dagster.yaml configures Dagster.

``make`` copies ./dagster.yaml into ``$DAGSTER_HOME`` (refreshed whenever it changes), so
Dagster's own warning that ./dagster.yaml "will not be used" would mislead: its copy is used.
This entry point says what is used instead, and drops that warning only when the copy is
identical; every other ``dagster`` message and option is untouched.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

# The phrase of dagster dev's warning about a dagster.yaml in the current folder.
_MISLEADING = "file will not be used to configure Dagster"


def instance_note(folder: Path, dagster_home: str | None) -> tuple[str, bool]:
    """What configures the Dagster instance of ``dagster dev`` started in ``folder``.

    Also whether Dagster's warning about ``folder``'s dagster.yaml would mislead (its copy is in
    use).
    """
    if not dagster_home:
        return (
            "Dagster instance: DAGSTER_HOME is not set, so dagster dev keeps this session in a "
            "temporary folder with Dagster's defaults (./dagster.yaml is not read).",
            False,
        )
    home = Path(dagster_home)
    used, own = home / "dagster.yaml", folder / "dagster.yaml"
    if not used.is_file():
        return (
            f"Dagster instance: DAGSTER_HOME={home}, which has no dagster.yaml: Dagster's "
            "defaults apply.",
            False,
        )
    if own.is_file() and own.resolve() != used.resolve():
        if own.read_bytes() == used.read_bytes():
            return (
                f"Dagster instance: DAGSTER_HOME={home}, configured by {used}, a copy of "
                f"{own} (make refreshes it whenever {own.name} changes).",
                True,
            )
        return (
            f"Dagster instance: DAGSTER_HOME={home}, configured by {used}, which differs from "
            f"{own}: run make again (or copy it there) to use {own}.",
            False,
        )
    return f"Dagster instance: DAGSTER_HOME={home}, configured by {used}.", False


class _DropCopiedConfigWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _MISLEADING not in record.getMessage()


def main() -> int:
    """``python -m mixpanel_assets.sandbox.dagster_dev dev -w workspace.yaml`` = ``dagster dev``."""
    # The `dagster` command's own entry point, as the installed package declares it.
    (entry,) = entry_points(group="console_scripts", name="dagster")
    dagster_cli = entry.load()

    note, copied = instance_note(Path.cwd(), os.environ.get("DAGSTER_HOME"))
    print(note, flush=True)
    if copied:
        logging.getLogger("dagster").addFilter(_DropCopiedConfigWarning())
    sys.argv[0] = "dagster"
    return dagster_cli()


if __name__ == "__main__":
    sys.exit(main())
