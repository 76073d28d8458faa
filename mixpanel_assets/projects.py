"""The Mixpanel projects a code location serves: MIXPANEL_ASSETS_PROJECTS's file, or one."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from dagster import AssetKey
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from mixpanel_assets.errors import ConfigError

PROJECTS_VARIABLE = "MIXPANEL_ASSETS_PROJECTS"
PROJECT_TAG = "mixpanel_assets/project"
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_VARIABLE_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ProjectKeys:
    """The names of one project's assets, resources and automation; flat when it has no name."""

    name: str | None = None

    def asset(self, asset: str) -> AssetKey:
        """The key of ``asset`` for this project."""
        return AssetKey([self.name, asset] if self.name else [asset])

    def named(self, base: str) -> str:
        """A job, schedule, sensor, asset group or resource key: ``base`` or ``<name>_<base>``."""
        return f"{self.name}_{base}" if self.name else base

    def resource(self, context: Any, base: str) -> Any:
        """The project's resource ``base`` from a run's or a sensor's context."""
        return getattr(context.resources, self.named(base))

    @property
    def prefix(self) -> list[str]:
        """The prefix of this project's asset keys ([] for the flat names)."""
        return [self.name] if self.name else []

    @property
    def tags(self) -> dict[str, str]:
        """Tags of the project's runs (none for the single project of flat keys)."""
        return {PROJECT_TAG: self.name} if self.name else {}


FLAT = ProjectKeys()


@dataclass(frozen=True)
class ProjectSpec:
    """One Mixpanel project: where its credentials are, its days, and where its events go."""

    name: str | None  # the assets' key prefix; None for the single project of flat keys
    project_id: str | None  # None: read from MIXPANEL_PROJECT_ID at launch (single project)
    username_variable: str
    secret_variable: str
    start_date: date
    region: str | None = None
    export_url: str | None = None
    project_timezone: str | None = None
    event_time: str | None = None
    dataset_id: str | None = None
    mapping: str | None = None

    @property
    def key_prefix(self) -> list[str]:
        """The prefix of this project's asset keys ([] for the flat names)."""
        return [self.name] if self.name else []

    @property
    def keys(self) -> ProjectKeys:
        """The names of this project's definitions."""
        return ProjectKeys(self.name)

    def variable(self, name: str) -> str:
        """How errors name a setting of this project."""
        return name if self.name is None else f"{PROJECTS_VARIABLE} project {self.name!r} {name}"


class _ProjectEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)

    project_id: str
    service_account_username_env: str
    service_account_secret_env: str
    start_date: date
    region: Literal["US", "EU", "IN"] | None = None
    export_url: str | None = None
    project_timezone: str | None = None
    event_time: Literal["utc", "project_local"] | None = None
    dataset_id: str | None = None
    mapping: str | None = None

    @field_validator("project_id", mode="before")
    @classmethod
    def _project_id(cls, value: Any) -> str:
        text = str(value).strip() if isinstance(value, int | str) else ""
        if not text.isdigit():
            raise ValueError("give the number in the Mixpanel project's settings, e.g. '3141592'")
        return text

    @field_validator("service_account_username_env", "service_account_secret_env")
    @classmethod
    def _variable_name(cls, value: str) -> str:
        if not _VARIABLE_NAME.fullmatch(value):
            raise ValueError(
                "give the NAME of the environment variable that holds the credential "
                "(e.g. MIXPANEL_WEB_SECRET), never the credential itself"
            )
        return value

    @field_validator("export_url")
    @classmethod
    def _export_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry credentials (they come from the *_env variables)")
        loopback = parts.hostname in _LOOPBACK_HOSTS or (parts.hostname or "").startswith("127.")
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise ValueError("must be an https URL (http only to a loopback address)")
        return value

    @field_validator("project_timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("is not an IANA timezone, e.g. UTC or America/Los_Angeles") from None
        return value


class _ProjectsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    projects: dict[str, _ProjectEntry]


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise ConfigError(f"line {key_node.start_mark.line + 1}: {key!r} is given twice")
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_projects(path: Path) -> list[ProjectSpec]:
    """The projects of a projects file, checked whole; a ConfigError names file, project and key."""
    where = f"{PROJECTS_VARIABLE}={str(path)!r}"
    try:
        text = path.read_text()
    except OSError as problem:
        raise ConfigError(f"{where}: cannot read the file ({problem.strerror}).") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except ConfigError as problem:
        raise ConfigError(f"{where}: {problem}") from None
    except yaml.YAMLError as problem:
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    try:
        parsed = _ProjectsFile.model_validate(raw)
    except ValidationError as problem:
        raise ConfigError(f"{where}: {_describe(problem)}") from None
    if not parsed.projects:
        raise ConfigError(f"{where}: 'projects' is empty: name at least one project.")
    by_id: dict[str, str] = {}
    specs = []
    for name, entry in parsed.projects.items():
        if not _NAME.fullmatch(name):
            raise ConfigError(
                f"{where}: project name {name!r} is not valid: use lower-case letters, digits "
                "and _, starting with a letter (it becomes the assets' key prefix)."
            )
        if entry.project_id in by_id:
            raise ConfigError(
                f"{where}: projects {by_id[entry.project_id]!r} and {name!r} have the same "
                f"project_id {entry.project_id}: each Mixpanel project is served once."
            )
        by_id[entry.project_id] = name
        mapping = entry.mapping
        if mapping is not None:
            resolved = (path.parent / mapping).resolve()
            if not resolved.is_file():
                raise ConfigError(
                    f"{where}: project {name!r}, key 'mapping': no file at {str(resolved)!r} "
                    "(a relative path is read from the projects file's folder)."
                )
            mapping = str(resolved)
        specs.append(
            ProjectSpec(
                name=name,
                project_id=entry.project_id,
                username_variable=entry.service_account_username_env,
                secret_variable=entry.service_account_secret_env,
                start_date=entry.start_date,
                region=entry.region,
                export_url=entry.export_url,
                project_timezone=entry.project_timezone,
                event_time=entry.event_time,
                dataset_id=entry.dataset_id,
                mapping=mapping,
            )
        )
    return specs


def _describe(problem: ValidationError) -> str:
    """The first three errors, each as 'project X, key Y: what is wrong'."""
    return "; ".join(_describe_one(error) for error in problem.errors()[:3])


def _describe_one(error: Any) -> str:
    location = [str(part) for part in error["loc"]]
    if location[:1] == ["projects"] and len(location) >= 2:
        where = f"project {location[1]!r}"
        if len(location) >= 3:
            where += f", key {location[2]!r}"
    else:
        where = f"key {'.'.join(location) or 'projects'!r}"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key (see the contract's projects file; credentials go in *_env names)"
    elif error["type"] == "missing":
        message = "missing: it is required"
    return f"{where}: {message}"


def projects_file() -> Path | None:
    """MIXPANEL_ASSETS_PROJECTS's file, None when the variable is unset."""
    path = os.environ.get(PROJECTS_VARIABLE, "").strip()
    return Path(path) if path else None


def configured_projects(
    start_date: date | Callable[[], date] | None = None,
) -> list[ProjectSpec]:
    """The projects to serve: the projects file when MIXPANEL_ASSETS_PROJECTS is set, else one.

    ``start_date`` (or a function returning it, called only then) is the single project's.
    """
    path = projects_file()
    if path is not None:
        return load_projects(path)
    if start_date is None:
        raise ConfigError("a start date is needed for the single project")
    if callable(start_date):
        start_date = start_date()
    return [
        ProjectSpec(
            name=None,
            project_id=None,
            username_variable="MIXPANEL_SERVICE_ACCOUNT_USERNAME",
            secret_variable="MIXPANEL_SERVICE_ACCOUNT_SECRET",
            start_date=start_date,
        )
    ]
