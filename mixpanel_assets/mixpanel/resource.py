"""The Mixpanel resource: the contract's MIXPANEL_* variables, checked, turned into a client."""

from __future__ import annotations

from urllib.parse import urlparse

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from mixpanel_assets.mixpanel.event_time import EVENT_TIME_REGIMES
from mixpanel_assets.mixpanel.export_client import REGION_EXPORT_URLS, MixpanelExportClient
from mixpanel_assets.settings import (
    ConfigError,
    env_or_default,
    require_non_empty,
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
    read_timeout_seconds: float = 600.0
    max_attempts: int = 5
    retry_base_seconds: float = 2.0

    @classmethod
    def from_env(cls) -> MixpanelResource:
        """Configured from the contract's variables (resolved by Dagster at launch)."""
        return cls(
            project_id=EnvVar("MIXPANEL_PROJECT_ID"),
            service_account_username=EnvVar("MIXPANEL_SERVICE_ACCOUNT_USERNAME"),
            service_account_secret=EnvVar("MIXPANEL_SERVICE_ACCOUNT_SECRET"),
            region=env_or_default("MIXPANEL_REGION", "US"),
            export_url=env_or_default("MIXPANEL_EXPORT_URL", ""),
            project_timezone=env_or_default("MIXPANEL_PROJECT_TIMEZONE", "UTC"),
            event_time=env_or_default("MIXPANEL_EVENT_TIME", "utc"),
        )

    def resolved_export_url(self) -> str:
        if self.export_url:
            parsed = urlparse(self.export_url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ConfigError(
                    f"MIXPANEL_EXPORT_URL={self.export_url!r} is not an http(s) URL: give the "
                    "full URL of the export endpoint, e.g. https://data.mixpanel.com/api/2.0/export."
                )
            return self.export_url
        region = self.region.strip().upper()
        if region not in REGION_EXPORT_URLS:
            raise ConfigError(
                f"MIXPANEL_REGION={self.region!r} is not a Mixpanel data residency: use US, EU "
                "or IN, as shown in the project's settings."
            )
        return REGION_EXPORT_URLS[region]

    def checked_event_time(self) -> str:
        if self.event_time not in EVENT_TIME_REGIMES:
            raise ConfigError(
                f"MIXPANEL_EVENT_TIME={self.event_time!r} is not valid: use utc (projects created "
                "since 2023) or project_local (older projects that store local wall-clock time)."
            )
        return self.event_time

    def get_client(self) -> MixpanelExportClient:
        require_non_empty(
            {
                "MIXPANEL_PROJECT_ID": self.project_id,
                "MIXPANEL_SERVICE_ACCOUNT_USERNAME": self.service_account_username,
                "MIXPANEL_SERVICE_ACCOUNT_SECRET": self.service_account_secret,
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
            timezone=validate_timezone(self.project_timezone),
            read_timeout_seconds=self.read_timeout_seconds,
            max_attempts=self.max_attempts,
            retry_base_seconds=self.retry_base_seconds,
        )
