"""The `dagster` command of this venv, as the tests run it in a subprocess."""

import sys
from pathlib import Path

DAGSTER = str(Path(sys.executable).with_name("dagster"))


def materialize_command(selection: str, partition: str) -> list[str]:
    """``dagster asset materialize`` of the code location, as the contract documents it."""
    return [
        DAGSTER,
        "asset",
        "materialize",
        "-m",
        "mixpanel_assets.definitions",
        "--select",
        selection,
        "--partition",
        partition,
    ]
