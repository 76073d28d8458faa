"""The AEP resource: the contract's AEP_* variables, checked, turned into a client."""

from __future__ import annotations

import os

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from mixpanel_assets.aep.client import AEPClient
from mixpanel_assets.aep.day_batch import MAX_SMALL_FILE_BYTES
from mixpanel_assets.aep.transport import DEFAULT_SCOPES
from mixpanel_assets.redaction import require_https
from mixpanel_assets.settings import (
    ConfigError,
    env_int_or_default,
    env_or_default,
    require_non_empty,
    required_value,
)

DEFAULT_IMS_URL = "https://ims-na1.adobelogin.com"
DEFAULT_PLATFORM_URL = "https://platform.adobe.io"


class AEPResource(ConfigurableResource):
    """An AEP dataset reached through an OAuth server-to-server credential."""

    ims_url: str = Field(default=DEFAULT_IMS_URL, description="AEP_IMS_URL")
    platform_url: str = Field(default=DEFAULT_PLATFORM_URL, description="AEP_PLATFORM_URL")
    client_id: str = Field(description="AEP_CLIENT_ID (also the x-api-key)")
    client_secret: str = Field(description="AEP_CLIENT_SECRET")
    org_id: str = Field(description="AEP_ORG_ID")
    sandbox_name: str = Field(default="prod", description="AEP_SANDBOX_NAME")
    scopes: str = Field(default=DEFAULT_SCOPES, description="AEP_SCOPES")
    dataset_id: str = Field(description="AEP_DATASET_ID")
    upload_file_max_bytes: int = Field(default=200_000_000, description="AEP_UPLOAD_FILE_MAX_BYTES")
    partial_ingestion_percent: float = Field(
        default=0.0,
        description="Share of records (percent) AEP may reject while the batch still succeeds; "
        "such a day passes with a warning check",
    )
    batch_timeout_seconds: float = Field(
        default=3 * 3600.0, description="How long to wait for AEP to process a batch"
    )
    poll_seconds: float = Field(
        default=0.25,
        description="Shortest Catalog poll interval; later ones are a tenth of the time waited, "
        "up to 30 s",
    )
    retry_base_seconds: float = 1.0

    @classmethod
    def from_env(cls, dataset_required: bool = True) -> AEPResource:
        """Configured from the contract's variables (resolved by Dagster at launch).

        Without ``dataset_required`` an unset AEP_DATASET_ID is left empty: every project of the
        projects file then names its own dataset.
        """
        return cls(
            ims_url=env_or_default("AEP_IMS_URL", DEFAULT_IMS_URL),
            platform_url=env_or_default("AEP_PLATFORM_URL", DEFAULT_PLATFORM_URL),
            client_id=EnvVar("AEP_CLIENT_ID"),
            client_secret=EnvVar("AEP_CLIENT_SECRET"),
            org_id=EnvVar("AEP_ORG_ID"),
            sandbox_name=env_or_default("AEP_SANDBOX_NAME", "prod"),
            scopes=env_or_default("AEP_SCOPES", DEFAULT_SCOPES),
            dataset_id=EnvVar("AEP_DATASET_ID")
            if dataset_required
            else env_or_default("AEP_DATASET_ID", ""),
            upload_file_max_bytes=env_int_or_default("AEP_UPLOAD_FILE_MAX_BYTES", 200_000_000),
        )

    def for_dataset(self, dataset_id: str | None) -> AEPResource:
        """The same credential aimed at ``dataset_id`` (a project's own); itself when None."""
        return self.model_copy(update={"dataset_id": dataset_id}) if dataset_id else self

    def get_client(self) -> AEPClient:
        """A client for this credential, once the dataset and upload file size are checked."""
        require_non_empty({"AEP_DATASET_ID": self.dataset_id})
        if not 0 < self.upload_file_max_bytes <= MAX_SMALL_FILE_BYTES:
            raise ConfigError(
                f"AEP_UPLOAD_FILE_MAX_BYTES={self.upload_file_max_bytes} must be between 1 and "
                f"{MAX_SMALL_FILE_BYTES} (AEP's small-file limit)."
            )
        return build_client(
            ims_url=self.ims_url,
            platform_url=self.platform_url,
            client_id=self.client_id,
            client_secret=self.client_secret,
            org_id=self.org_id,
            sandbox_name=self.sandbox_name,
            scopes=self.scopes,
            retry_base_seconds=self.retry_base_seconds,
        )


def build_client(
    *,
    ims_url: str,
    platform_url: str,
    client_id: str,
    client_secret: str,
    org_id: str,
    sandbox_name: str,
    scopes: str,
    retry_base_seconds: float = 1.0,
) -> AEPClient:
    """A client, once the credential's settings are checked; errors name the variable."""
    require_non_empty(
        {"AEP_CLIENT_ID": client_id, "AEP_CLIENT_SECRET": client_secret, "AEP_ORG_ID": org_id}
    )
    if not org_id.endswith("@AdobeOrg"):
        raise ConfigError(
            f"AEP_ORG_ID={org_id!r} is not an IMS org id: copy it from the Developer Console "
            "credential; it ends with @AdobeOrg."
        )
    require_https("AEP_IMS_URL", ims_url, DEFAULT_IMS_URL)
    require_https("AEP_PLATFORM_URL", platform_url, DEFAULT_PLATFORM_URL)
    if sandbox_name != sandbox_name.lower():
        raise ConfigError(
            f"AEP_SANDBOX_NAME={sandbox_name!r} must be the AEP sandbox's all-lowercase name, "
            "e.g. prod."
        )
    return AEPClient(
        ims_url=ims_url,
        platform_url=platform_url,
        client_id=client_id,
        client_secret=client_secret,
        org_id=org_id,
        sandbox_name=sandbox_name,
        scopes=scopes,
        retry_base_seconds=retry_base_seconds,
    )


def client_from_environment() -> AEPClient:
    """A client from the contract's variables, for commands that run outside Dagster."""
    return build_client(
        ims_url=os.environ.get("AEP_IMS_URL") or DEFAULT_IMS_URL,
        platform_url=os.environ.get("AEP_PLATFORM_URL") or DEFAULT_PLATFORM_URL,
        client_id=required_value("AEP_CLIENT_ID", "the OAuth server-to-server client id"),
        client_secret=required_value("AEP_CLIENT_SECRET", "the credential's client secret"),
        org_id=required_value("AEP_ORG_ID", "the IMS org id (...@AdobeOrg)"),
        sandbox_name=os.environ.get("AEP_SANDBOX_NAME") or "prod",
        scopes=os.environ.get("AEP_SCOPES") or DEFAULT_SCOPES,
    )
