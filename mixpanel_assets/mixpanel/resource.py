"""The Mixpanel resource: the contract's MIXPANEL_* variables, checked, turned into a client."""

from __future__ import annotations

from datetime import date
from typing import Any

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from mixpanel_assets.coordination import COORDINATION_VARIABLE, coordinator
from mixpanel_assets.mixpanel.event_time import export_day, export_timezone
from mixpanel_assets.mixpanel.export_client import (
    REGION_EXPORT_URLS,
    ExportQuery,
    MixpanelExportClient,
)
from mixpanel_assets.mixpanel.rate_budget import RateBudget
from mixpanel_assets.projects import ProjectSpec
from mixpanel_assets.redaction import require_https
from mixpanel_assets.settings import (
    ConfigError,
    env_or_default,
    require_non_empty,
    validate_event_time,
    validate_timezone,
)


class MixpanelResource(ConfigurableResource):
    """A Mixpanel project reached through a service account and the Raw Event Export API."""

    project_id: str = Field(description="MIXPANEL_PROJECT_ID")
    service_account_username: str = Field(description="MIXPANEL_SERVICE_ACCOUNT_USERNAME")
    service_account_secret: str = Field(description="MIXPANEL_SERVICE_ACCOUNT_SECRET")
    region: str = Field(default="US", description="MIXPANEL_REGION: US, EU or IN")
    export_url: str = Field(
        default="", description="MIXPANEL_EXPORT_URL; empty means the region's host"
    )
    project_timezone: str = Field(default="UTC", description="MIXPANEL_PROJECT_TIMEZONE")
    event_time: str = Field(default="utc", description="MIXPANEL_EVENT_TIME: utc or project_local")
    events: list[str] = Field(
        default_factory=list, description="Export only these event names (empty: all events)"
    )
    where: str = Field(
        default="", description="Mixpanel segmentation expression every export is filtered by"
    )
    time_in_ms: bool = Field(default=False, description="Ask for millisecond event times")
    queries_per_hour: int = Field(default=60, description="Mixpanel's export limit per project")
    queries_per_second: int = Field(default=3, description="Mixpanel's export limit per project")
    coordination_url: str = Field(
        default="",
        description="MIXPANEL_ASSETS_COORDINATION_URL: PostgreSQL holding the rate budget every "
        "machine shares; empty means a file under $DAGSTER_HOME (one machine)",
    )
    username_variable: str = Field(
        default="MIXPANEL_SERVICE_ACCOUNT_USERNAME",
        description="The variable the service account user comes from (errors name it)",
    )
    secret_variable: str = Field(
        default="MIXPANEL_SERVICE_ACCOUNT_SECRET",
        description="The variable the service account secret comes from (errors name it)",
    )
    read_timeout_seconds: float = 600.0
    max_attempts: int = Field(default=5, description="Attempts per export before the day fails")
    retry_base_seconds: float = 2.0
    step_retries: int = Field(
        default=2, description="Times the raw step tries again later after a transient failure"
    )
    step_retry_delay_seconds: float = 300.0
    days_per_request: int = Field(
        default=7,
        description="Days one export request covers in a backfill (Mixpanel advises 1-2 million "
        "events per request)",
    )

    @classmethod
    def from_env(cls, **settings: Any) -> MixpanelResource:
        """Configured from the contract's variables (resolved by Dagster at launch).

        ``settings`` sets the fields that have no variable (filters, retries, budget).
        """
        return cls(
            **settings,
            project_id=EnvVar("MIXPANEL_PROJECT_ID"),
            service_account_username=EnvVar("MIXPANEL_SERVICE_ACCOUNT_USERNAME"),
            service_account_secret=EnvVar("MIXPANEL_SERVICE_ACCOUNT_SECRET"),
            region=env_or_default("MIXPANEL_REGION", "US"),
            export_url=env_or_default("MIXPANEL_EXPORT_URL", ""),
            project_timezone=env_or_default("MIXPANEL_PROJECT_TIMEZONE", "UTC"),
            event_time=env_or_default("MIXPANEL_EVENT_TIME", "utc"),
            coordination_url=env_or_default(COORDINATION_VARIABLE, ""),
        )

    @classmethod
    def for_project(cls, spec: ProjectSpec, **settings: Any) -> MixpanelResource:
        """One project of the projects file (credentials resolved at launch).

        A spec without a project id gives ``from_env``: the single project of the MIXPANEL_*
        variables.
        """
        if spec.project_id is None:
            return cls.from_env(**settings)
        return cls(
            **settings,
            project_id=spec.project_id,
            service_account_username=EnvVar(spec.username_variable),
            service_account_secret=EnvVar(spec.secret_variable),
            username_variable=spec.username_variable,
            secret_variable=spec.secret_variable,
            region=spec.region or "US",
            export_url=spec.export_url or "",
            project_timezone=spec.project_timezone or "UTC",
            event_time=spec.event_time or "utc",
            coordination_url=env_or_default(COORDINATION_VARIABLE, ""),
        )

    def resolved_export_url(self) -> str:
        """The export endpoint: MIXPANEL_EXPORT_URL if set (https checked), else the region's."""
        if self.export_url:
            return require_https(
                "MIXPANEL_EXPORT_URL", self.export_url, "https://data.mixpanel.com/api/2.0/export"
            )
        region = self.region.strip().upper()
        if region not in REGION_EXPORT_URLS:
            raise ConfigError(
                f"MIXPANEL_REGION={self.region!r} is not a Mixpanel data residency: use US, EU "
                "or IN, as shown in the project's settings."
            )
        return REGION_EXPORT_URLS[region]

    def checked_event_time(self) -> str:
        """The event-time regime (MIXPANEL_EVENT_TIME), once checked to be a known one."""
        return validate_event_time(self.event_time)

    def export_timezone(self) -> str:
        """The zone of this project's export days: UTC, or the project's for legacy projects."""
        return export_timezone(self.checked_event_time(), validate_timezone(self.project_timezone))

    def get_client(self) -> MixpanelExportClient:
        """An export client for this project, once its credentials and settings are checked."""
        require_non_empty(
            {
                "MIXPANEL_PROJECT_ID": self.project_id,
                self.username_variable: self.service_account_username,
                self.secret_variable: self.service_account_secret,
            }
        )
        if not self.project_id.strip().isdigit():
            raise ConfigError(
                f"MIXPANEL_PROJECT_ID={self.project_id!r} is not a project id: use the number in "
                "the Mixpanel project's settings."
            )
        return MixpanelExportClient(
            project_id=self.project_id.strip(),
            username=self.service_account_username,
            secret=self.service_account_secret,
            export_url=self.resolved_export_url(),
            timezone=self.export_timezone(),
            read_timeout_seconds=self.read_timeout_seconds,
            max_attempts=self.max_attempts,
            retry_base_seconds=self.retry_base_seconds,
            budget=RateBudget(
                coordinator(self.coordination_url),
                f"mixpanel-export-budget-{self.project_id.strip()}",
                per_hour=self.queries_per_hour,
                per_second=self.queries_per_second,
            ),
        )

    def query(self, first_day: date, last_day: date, extra_where: str = "") -> ExportQuery:
        """An export of whole days with the configured filters (and ``extra_where`` too)."""
        parts = [part for part in (self.where, extra_where) if part]
        where = " and ".join(f"({part})" for part in parts) if len(parts) > 1 else "".join(parts)
        return ExportQuery(
            from_date=first_day,
            to_date=last_day,
            events=tuple(self.events),
            where=where or None,
            time_in_ms=self.time_in_ms,
        )

    def export_day_of(self, raw_time: Any) -> date:
        """The export day Mixpanel files an event of this project under."""
        return export_day(raw_time)
