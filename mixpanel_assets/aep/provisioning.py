"""The XDM schema and dataset the pipeline writes to, set up in AEP as code, idempotently.

Design notes: docs/design-notes.md, `aep/provisioning.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mixpanel_assets.aep.client import XED, AEPClient
from mixpanel_assets.aep.errors import AEPError
from mixpanel_assets.xdm.schema import CLASS_ID, FIELD_GROUP_IDS, tenant_field_group
from mixpanel_assets.xdm.spec import IdentityNamespaces, MappingRules

FIELD_GROUP_TITLE = "Mixpanel event details"
SCHEMA_TITLE = "Mixpanel ExperienceEvent"
DATASET_NAME = "Mixpanel events"
IDENTITY_MAP_FIELD_GROUP = "https://ns.adobe.com/xdm/context/identitymap"


class ProvisioningError(AEPError):
    """Something exists in AEP under our name but does not fit; the message says what to do."""


@dataclass(frozen=True)
class ProvisioningSpec:
    """What to set up in AEP: the tenant's fields, identity namespaces and the names to use."""

    tenant_id: str
    tenant_fields: Mapping[str, Any]  # the tenant field group's fields, in AEP notation
    namespaces: IdentityNamespaces
    dataset_name: str = DATASET_NAME
    schema_title: str = SCHEMA_TITLE
    field_group_title: str = FIELD_GROUP_TITLE

    @classmethod
    def for_mapping(cls, tenant_id: str, rules: MappingRules, **changes: Any) -> ProvisioningSpec:
        """What the mapping ``rules`` write under ``_<tenant_id>`` and into which namespaces.

        A malformed tenant id raises ValueError naming AEP_TENANT_ID.
        """
        return cls(
            tenant_id=tenant_id,
            tenant_fields=tenant_field_group(tenant_id, rules.custom_tenant_fields()),
            namespaces=rules.identity_namespaces,
            **changes,
        )

    @property
    def primary_identity_field(self) -> str:
        """The distinct id, which every Mixpanel event has, as a descriptor path."""
        return f"/_{self.tenant_id}/mixpanel/distinctId"


@dataclass
class Provisioned:
    """What provisioning found or made: the ids and each step, created now or already there."""

    dataset_id: str
    schema_id: str
    field_group_id: str
    steps: list[tuple[str, bool]]  # (what, created now)

    @property
    def created(self) -> list[str]:
        """The steps that created something now."""
        return [what for what, created in self.steps if created]

    def report(self) -> list[str]:
        """One line per step: ``created`` or ``exists`` and what."""
        return [f"{'created' if created else 'exists '}  {what}" for what, created in self.steps]


def provision(client: AEPClient, spec: ProvisioningSpec) -> Provisioned:
    """Create whatever of the namespaces, field group, schema, descriptor and dataset is missing."""
    _check_tenant(client, spec.tenant_id)
    steps = _namespaces(client, spec.namespaces)
    field_group_id, created = _field_group(client, spec)
    steps.append((f"field group {spec.field_group_title!r} {field_group_id}", created))
    schema_id, created = _schema(client, spec, field_group_id)
    steps.append((f"schema {spec.schema_title!r} {schema_id}", created))
    created = _primary_identity(client, spec, schema_id)
    steps.append(
        (
            f"primary identity {spec.primary_identity_field} ({spec.namespaces.distinct_id})",
            created,
        )
    )
    dataset_id, created = _dataset(client, spec, schema_id)
    steps.append((f"dataset {spec.dataset_name!r} {dataset_id}", created))
    return Provisioned(dataset_id, schema_id, field_group_id, steps)


def _check_tenant(client: AEPClient, tenant_id: str) -> None:
    actual = client.registry_stats().get("tenantId")
    if actual and actual != tenant_id:
        raise ProvisioningError(
            f"AEP_TENANT_ID={tenant_id!r}, but this organisation's tenant namespace is "
            f"{actual!r}: set AEP_TENANT_ID={actual}."
        )


def _namespaces(client: AEPClient, namespaces: IdentityNamespaces) -> list[tuple[str, bool]]:
    existing = {namespace.get("code") for namespace in client.identity_namespaces()}
    wanted = {
        namespaces.distinct_id: "Mixpanel distinct_id",
        namespaces.user_id: "Mixpanel $user_id",
        namespaces.device_id: "Mixpanel $device_id",
    }
    steps = []
    for code, name in wanted.items():
        if code not in existing:
            client.create_identity_namespace(
                code=code, name=name, description=f"{name}, as exported by Mixpanel"
            )
        steps.append((f"identity namespace {code}", code not in existing))
    return steps


def _field_group(client: AEPClient, spec: ProvisioningSpec) -> tuple[str, bool]:
    found = client.find_tenant_resources("fieldgroups", spec.field_group_title)
    if found:
        return found[0]["$id"], False
    created = client.create_tenant_resource(
        "fieldgroups",
        {
            "title": spec.field_group_title,
            "description": "What Mixpanel knows of an event beyond the standard XDM fields.",
            "type": "object",
            "meta:intendedToExtend": [CLASS_ID],
            "definitions": {"mixpanel": dict(spec.tenant_fields)},
            "allOf": [{"$ref": "#/definitions/mixpanel"}],
        },
    )
    return created["$id"], True


def _schema(client: AEPClient, spec: ProvisioningSpec, field_group_id: str) -> tuple[str, bool]:
    needed = [CLASS_ID, IDENTITY_MAP_FIELD_GROUP, *FIELD_GROUP_IDS, field_group_id]
    found = client.find_tenant_resources("schemas", spec.schema_title)
    if not found:
        created = client.create_tenant_resource(
            "schemas",
            {
                "title": spec.schema_title,
                "description": "Mixpanel events as XDM ExperienceEvents (mixpanel-assets).",
                "type": "object",
                "allOf": [{"$ref": reference} for reference in needed],
            },
        )
        return created["$id"], True
    schema_id = found[0]["$id"]
    composed = client.get_schema(schema_id, accept=XED)
    present = {part.get("$ref") for part in composed.get("allOf", [])}
    missing = [reference for reference in needed if reference not in present]
    if missing:
        raise ProvisioningError(
            f"schema {spec.schema_title!r} ({schema_id}) exists without {', '.join(missing)}: "
            "add them to it in the AEP UI (Schemas > the schema > Add field groups), or pass "
            "another --schema-title to create a new schema."
        )
    return schema_id, False


def _primary_identity(client: AEPClient, spec: ProvisioningSpec, schema_id: str) -> bool:
    primaries = [
        descriptor
        for descriptor in client.schema_descriptors(schema_id)
        if descriptor.get("@type") == "xdm:descriptorIdentity" and descriptor.get("xdm:isPrimary")
    ]
    for descriptor in primaries:
        if (
            descriptor.get("xdm:sourceProperty") == spec.primary_identity_field
            and descriptor.get("xdm:namespace") == spec.namespaces.distinct_id
        ):
            return False
    if primaries:
        other = primaries[0]
        raise ProvisioningError(
            f"schema {schema_id} already has a primary identity, "
            f"{other.get('xdm:sourceProperty')} ({other.get('xdm:namespace')}); a schema has one. "
            f"Remove that descriptor if {spec.primary_identity_field} should be primary."
        )
    client.create_descriptor(
        {
            "@type": "xdm:descriptorIdentity",
            "xdm:sourceSchema": schema_id,
            "xdm:sourceVersion": 1,
            "xdm:sourceProperty": spec.primary_identity_field,
            "xdm:namespace": spec.namespaces.distinct_id,
            "xdm:property": "xdm:code",
            "xdm:isPrimary": True,
        }
    )
    return True


def _dataset(client: AEPClient, spec: ProvisioningSpec, schema_id: str) -> tuple[str, bool]:
    found = client.find_datasets(spec.dataset_name)
    if not found:
        description = "Mixpanel raw events, one batch per day, loaded by mixpanel-assets."
        return client.create_dataset(spec.dataset_name, schema_id, description), True
    on_schema = [item for item in found if (item.get("schemaRef") or {}).get("id") == schema_id]
    if not on_schema:
        raise ProvisioningError(
            f"dataset {spec.dataset_name!r} ({found[0]['id']}) exists on another schema, "
            f"{(found[0].get('schemaRef') or {}).get('id')}: pass another --dataset-name."
        )
    return on_schema[0]["id"], False
