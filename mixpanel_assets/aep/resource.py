"""The AEP resource: the contract's AEP_* variables, checked, turned into a client."""

from __future__ import annotations

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from mixpanel_assets.aep.client import DEFAULT_SCOPES, AEPClient
from mixpanel_assets.settings import (
    ConfigError,
    env_int_or_default,
    env_or_default,
    require_non_empty,
)


class AEPResource(ConfigurableResource):
    """An AEP dataset reached through an OAuth server-to-server credential."""

    ims_url: str = Field(default="https://ims-na1.adobelogin.com", description="AEP_IMS_URL")
    platform_url: str = Field(default="https://platform.adobe.io", description="AEP_PLATFORM_URL")
    client_id: str = Field(description="AEP_CLIENT_ID (also the x-api-key)")
    client_secret: str = Field(description="AEP_CLIENT_SECRET")
    org_id: str = Field(description="AEP_ORG_ID")
    sandbox_name: str = Field(default="prod", description="AEP_SANDBOX_NAME")
    scopes: str = Field(default=DEFAULT_SCOPES, description="AEP_SCOPES")
    dataset_id: str = Field(description="AEP_DATASET_ID")
    upload_file_max_bytes: int = Field(default=200_000_000, description="AEP_UPLOAD_FILE_MAX_BYTES")
    partial_ingestion_percent: float = Field(
        default=0.0, description="Share of records AEP may reject before failing the batch"
    )
    batch_timeout_seconds: float = 3 * 3600.0
    poll_seconds: float = Field(
        default=0.25, description="First Catalog poll interval; doubles up to 30 s"
    )
    retry_base_seconds: float = 1.0

    @classmethod
    def from_env(cls) -> AEPResource:
        """Configured from the contract's variables (resolved by Dagster at launch)."""
        return cls(
            ims_url=env_or_default("AEP_IMS_URL", "https://ims-na1.adobelogin.com"),
            platform_url=env_or_default("AEP_PLATFORM_URL", "https://platform.adobe.io"),
            client_id=EnvVar("AEP_CLIENT_ID"),
            client_secret=EnvVar("AEP_CLIENT_SECRET"),
            org_id=EnvVar("AEP_ORG_ID"),
            sandbox_name=env_or_default("AEP_SANDBOX_NAME", "prod"),
            scopes=env_or_default("AEP_SCOPES", DEFAULT_SCOPES),
            dataset_id=EnvVar("AEP_DATASET_ID"),
            upload_file_max_bytes=env_int_or_default("AEP_UPLOAD_FILE_MAX_BYTES", 200_000_000),
        )

    def get_client(self) -> AEPClient:
        require_non_empty(
            {
                "AEP_CLIENT_ID": self.client_id,
                "AEP_CLIENT_SECRET": self.client_secret,
                "AEP_ORG_ID": self.org_id,
                "AEP_DATASET_ID": self.dataset_id,
            }
        )
        if not self.org_id.endswith("@AdobeOrg"):
            raise ConfigError(
                f"AEP_ORG_ID={self.org_id!r} is not an IMS org id: copy it from the Developer "
                "Console credential; it ends with @AdobeOrg."
            )
        if self.sandbox_name != self.sandbox_name.lower():
            raise ConfigError(
                f"AEP_SANDBOX_NAME={self.sandbox_name!r} must be the AEP sandbox's all-lowercase "
                "name, e.g. prod."
            )
        return AEPClient(
            ims_url=self.ims_url,
            platform_url=self.platform_url,
            client_id=self.client_id,
            client_secret=self.client_secret,
            org_id=self.org_id,
            sandbox_name=self.sandbox_name,
            scopes=self.scopes,
            retry_base_seconds=self.retry_base_seconds,
        )
