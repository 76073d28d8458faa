"""`make dev` says truly which dagster.yaml configures Dagster, and not the opposite."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mixpanel_assets.sandbox import __main__ as sandbox_main
from mixpanel_assets.sandbox.dagster_dev import instance_note

DAGSTER = str(Path(sys.executable).with_name("dagster"))
WARNING = "will not be used to configure Dagster"
# Identical and unloadable: dagster dev stops right after its check of the current folder.
BROKEN = "not_a_dagster_setting: 1\n"
WORKSPACE = "load_from:\n  - python_module:\n      module_name: mixpanel_assets.definitions\n"


def _project(tmp_path: Path, copied: str) -> tuple[Path, Path]:
    folder, home = tmp_path / "project", tmp_path / "project" / ".dagster_home"
    home.mkdir(parents=True)
    (folder / "dagster.yaml").write_text(BROKEN)
    (folder / "workspace.yaml").write_text(WORKSPACE)
    (home / "dagster.yaml").write_text(copied)
    return folder, home


def _dev(command: list[str], folder: Path, home: Path) -> str:
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    done = subprocess.run(
        [*command, "dev", "-w", "workspace.yaml"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0  # the broken instance file stops it before any service starts
    return done.stdout + done.stderr


@pytest.mark.timeout(240)
def test_make_devs_dagster_dev_names_the_copy_in_use_without_dagsters_contrary_warning(
    tmp_path: Path,
) -> None:
    folder, home = _project(tmp_path, copied=BROKEN)
    plain = _dev([DAGSTER], folder, home)
    ours = _dev([sys.executable, "-m", "mixpanel_assets.sandbox.dagster_dev"], folder, home)
    assert WARNING in plain  # what dagster dev alone says in make dev's setting
    assert WARNING not in ours
    assert (
        f"Dagster instance: DAGSTER_HOME={home}, configured by {home / 'dagster.yaml'}, a copy "
        f"of {folder / 'dagster.yaml'}" in ours
    )


@pytest.mark.timeout(120)
def test_a_home_file_that_differs_keeps_dagsters_warning(tmp_path: Path) -> None:
    folder, home = _project(tmp_path, copied="telemetry: [\n")
    output = _dev([sys.executable, "-m", "mixpanel_assets.sandbox.dagster_dev"], folder, home)
    assert WARNING in output and "which differs from" in output


def test_the_note_says_what_configures_the_instance(tmp_path: Path) -> None:
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    assert "DAGSTER_HOME is not set" in instance_note(tmp_path, None)[0]
    empty = tmp_path / "empty_home"
    empty.mkdir()
    note, copied = instance_note(tmp_path, str(empty))
    assert "has no dagster.yaml: Dagster's defaults apply" in note and not copied
    assert instance_note(tmp_path, str(tmp_path)) == (
        f"Dagster instance: DAGSTER_HOME={tmp_path}, configured by {tmp_path / 'dagster.yaml'}.",
        False,
    )


def test_make_dev_starts_dagster_dev_through_the_note(monkeypatch: pytest.MonkeyPatch) -> None:
    started = []

    class Started:
        def __init__(self, command: list[str], **_: object) -> None:
            started.append(command)

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(sandbox_main.subprocess, "Popen", Started)
    assert sandbox_main._dagster_dev({}) == 0
    assert started == [
        [sys.executable, "-m", "mixpanel_assets.sandbox.dagster_dev", "dev", "-w", "workspace.yaml"]
    ]
