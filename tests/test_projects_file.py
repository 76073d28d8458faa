"""MIXPANEL_ASSETS_PROJECTS: the projects file is checked whole when the code location loads."""

from datetime import date
from pathlib import Path

import pytest

from mixpanel_assets.errors import ConfigError
from mixpanel_assets.projects import configured_projects, load_projects

TWO_PROJECTS = """
projects:
  web:
    project_id: "3141592"
    service_account_username_env: MIXPANEL_WEB_USERNAME
    service_account_secret_env: MIXPANEL_WEB_SECRET
    start_date: 2026-11-01
    region: EU
    project_timezone: America/Los_Angeles
    event_time: project_local
  app:
    project_id: 2718281
    service_account_username_env: MIXPANEL_APP_USERNAME
    service_account_secret_env: MIXPANEL_APP_SECRET
    start_date: 2026-10-15
    export_url: http://127.0.0.1:8080/api/2.0/export
    dataset_id: ds_app
    mapping: app-mapping.yaml
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "projects.yaml"
    path.write_text(text)
    return path


def test_two_projects_are_read_with_their_settings(tmp_path: Path) -> None:
    (tmp_path / "app-mapping.yaml").write_text("{}")
    web, app = load_projects(write(tmp_path, TWO_PROJECTS))
    assert (web.name, web.project_id, web.region, web.event_time) == (
        "web",
        "3141592",
        "EU",
        "project_local",
    )
    assert web.project_timezone == "America/Los_Angeles"
    assert web.secret_variable == "MIXPANEL_WEB_SECRET"
    assert web.key_prefix == ["web"]
    assert web.dataset_id is None and web.mapping is None
    assert (app.project_id, app.start_date, app.dataset_id) == (
        "2718281",
        date(2026, 10, 15),
        "ds_app",
    )
    assert app.mapping == str((tmp_path / "app-mapping.yaml").resolve())


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ("    region: EU\n", "    region: EU\n    colour: blue\n"),
            "project 'web', key 'colour': unknown key",
        ),
        (
            ("    region: EU\n", "    region: EU\n    service_account_secret: hunter2-secret\n"),
            "project 'web', key 'service_account_secret': unknown key",
        ),
        (("  app:\n", "  web:\n"), "'web' is given twice"),
        (('"3141592"', '"2718281"'), "have the same project_id 2718281"),
        (("  web:\n", "  Web-1:\n"), "project name 'Web-1' is not valid"),
        (("    region: EU\n", "    region: Mars\n"), "project 'web', key 'region'"),
        (("    start_date: 2026-11-01\n", ""), "project 'web', key 'start_date': missing"),
        (
            ("MIXPANEL_WEB_SECRET", "s3cr3t-value!"),
            "key 'service_account_secret_env': give the NAME",
        ),
        (
            ("http://127.0.0.1:8080", "http://mixpanel.example.com"),
            "key 'export_url': must be an https URL",
        ),
        (("America/Los_Angeles", "Mars/Olympus"), "key 'project_timezone': is not an IANA"),
        (("app-mapping.yaml", "missing.yaml"), "project 'app', key 'mapping': no file at"),
        (("projects:\n", "project:\n"), "unknown key"),
    ],
)
def test_a_bad_file_fails_naming_file_project_and_key(
    tmp_path: Path, edit: tuple[str, str], expected: str
) -> None:
    (tmp_path / "app-mapping.yaml").write_text("{}")
    old, new = edit
    assert old in TWO_PROJECTS
    path = write(tmp_path, TWO_PROJECTS.replace(old, new, 1))
    with pytest.raises(ConfigError) as raised:
        load_projects(path)
    message = str(raised.value)
    assert expected in message
    assert str(path) in message and "MIXPANEL_ASSETS_PROJECTS" in message
    # A credential written into the file by mistake is never repeated back.
    assert "hunter2-secret" not in message and "s3cr3t-value!" not in message


def test_an_empty_or_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'projects' is empty"):
        load_projects(write(tmp_path, "projects: {}\n"))
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_projects(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_projects(write(tmp_path, "projects: [unclosed\n"))


def test_without_the_variable_one_project_with_flat_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MIXPANEL_ASSETS_PROJECTS", raising=False)
    (single,) = configured_projects(date(2026, 11, 1))
    assert single.name is None and single.key_prefix == []
    assert single.secret_variable == "MIXPANEL_SERVICE_ACCOUNT_SECRET"
    (tmp_path / "app-mapping.yaml").write_text("{}")
    monkeypatch.setenv("MIXPANEL_ASSETS_PROJECTS", str(write(tmp_path, TWO_PROJECTS)))
    assert [spec.name for spec in configured_projects()] == ["web", "app"]
