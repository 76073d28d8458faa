"""The mapping's configuration: the tenant namespace and the mapping file."""

from __future__ import annotations

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from mixpanel_assets.mixpanel.resource import MixpanelResource
from mixpanel_assets.settings import ConfigError, env_int_or_default, env_or_default
from mixpanel_assets.xdm.mapping import MappingSpec
from mixpanel_assets.xdm.schema import tenant_field_group
from mixpanel_assets.xdm.spec import (
    DEFAULT_MAPPING_FILE,
    MAPPING_VARIABLE,
    MappingFileError,
    MappingRules,
    load_rules,
)

WORKERS_VARIABLE = "MIXPANEL_ASSETS_MAPPING_WORKERS"


class XdmMappingResource(ConfigurableResource):
    """How Mixpanel events become XDM records in this organisation."""

    tenant_id: str = Field(description="AEP_TENANT_ID: custom fields go under _<tenant>")
    mapping_file: str = Field(
        default="",
        description=f"{MAPPING_VARIABLE}: a mapping YAML file; empty means the default mapping",
    )
    workers: int = Field(
        default=0,
        description=f"{WORKERS_VARIABLE}: processes that map a big day; 0 means one per CPU the "
        "run may use",
    )

    @classmethod
    def from_env(cls, mapping_file: str | None = None) -> XdmMappingResource:
        """Configured from the contract's variables.

        ``mapping_file`` (a project's own) replaces MIXPANEL_ASSETS_MAPPING's.
        """
        return cls(
            tenant_id=EnvVar("AEP_TENANT_ID"),
            mapping_file=mapping_file or env_or_default(MAPPING_VARIABLE, ""),
            workers=env_int_or_default(WORKERS_VARIABLE, 0),
        )

    def worker_count(self) -> int | None:
        """The workers asked for, None for the default; a negative count names the variable."""
        if self.workers < 0:
            raise ConfigError(
                f"{WORKERS_VARIABLE}={self.workers} is not a number of processes: use 1 or more, "
                "or 0 for one per CPU the run may use."
            )
        return self.workers or None

    def rules(self) -> MappingRules:
        """The mapping file's rules, checked; a bad file raises ``ConfigError`` naming it."""
        try:
            return load_rules(self.mapping_file)
        except MappingFileError as problem:
            raise ConfigError(str(problem)) from None

    def mapping_source(self) -> str:
        """The mapping file in use: the configured one, else the default one's path."""
        return self.mapping_file or str(DEFAULT_MAPPING_FILE)

    def spec(self, mixpanel: MixpanelResource) -> MappingSpec:
        """The spec for a run; raises ``ConfigError`` naming the variable that is wrong."""
        try:
            tenant_field_group(self.tenant_id)
        except ValueError as problem:
            raise ConfigError(str(problem)) from None
        return MappingSpec(
            project_id=mixpanel.project_id,
            tenant_id=self.tenant_id,
            event_time=mixpanel.checked_event_time(),
            project_timezone=mixpanel.project_timezone,
            rules=self.rules(),
        )
