"""The mapping's configuration: tenant namespace and identity namespaces."""

from __future__ import annotations

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from mixpanel_assets.mixpanel.resource import MixpanelResource
from mixpanel_assets.xdm.mapping import IdentityNamespaces, MappingSpec
from mixpanel_assets.xdm.schema import tenant_field_group


class XdmMappingResource(ConfigurableResource):
    """How Mixpanel events become XDM records in this organisation."""

    tenant_id: str = Field(description="AEP_TENANT_ID: custom fields go under _<tenant>")
    distinct_id_namespace: str = "MixpanelDistinctId"
    user_id_namespace: str = "MixpanelUserId"
    device_id_namespace: str = "MixpanelDeviceId"

    @classmethod
    def from_env(cls) -> XdmMappingResource:
        return cls(tenant_id=EnvVar("AEP_TENANT_ID"))

    def spec(self, mixpanel: MixpanelResource) -> MappingSpec:
        tenant_field_group(self.tenant_id)  # fails early, naming AEP_TENANT_ID, if malformed
        return MappingSpec(
            project_id=mixpanel.project_id,
            tenant_id=self.tenant_id,
            event_time=mixpanel.checked_event_time(),
            project_timezone=mixpanel.project_timezone,
            identity_namespaces=IdentityNamespaces(
                distinct_id=self.distinct_id_namespace,
                user_id=self.user_id_namespace,
                device_id=self.device_id_namespace,
            ),
        )
