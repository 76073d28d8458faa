"""The XDM records' columns (``dagster/column_schema``), from the mapping spec."""

from __future__ import annotations

from dagster import TableColumn, TableColumnConstraints, TableSchema

from mixpanel_assets.xdm.conversions import CONVERSIONS
from mixpanel_assets.xdm.spec import TENANT_OBJECT, MappingRules

_REQUIRED = TableColumnConstraints(nullable=False)
# The fields the mapping fills itself, in every record unless marked optional.
_FILLED_BY_THE_MAPPING = (
    ("_id", "string", True, "SHA-256 of the event's Mixpanel dedup key (hex)"),
    ("timestamp", "string", True, "the event's time, RFC 3339 in UTC (from Mixpanel's time)"),
    ("eventType", "string", True, "from the event name (the mapping's event_types)"),
    ("identityMap", "object", True, "the event's identities; distinct_id is the primary one"),
    ("environment.type", "string", False, "application or browser, from the Mixpanel SDK"),
    ("producedBy", "string", False, "the ExperienceEvent class's default, self"),
    (f"{TENANT_OBJECT}.mixpanel.eventName", "string", True, "the Mixpanel event name"),
    (f"{TENANT_OBJECT}.mixpanel.time", "number", True, "Mixpanel's time, as exported"),
    (
        f"{TENANT_OBJECT}.mixpanel.properties",
        "object",
        False,
        "every property not mapped to a field (a map of strings)",
    ),
)


def xdm_column_schema(rules: MappingRules, tenant_id: str | None = None) -> TableSchema:
    """One column per XDM field a record may hold: the mapping's own, then one per property.

    ``_tenant`` is the tenant object ``_<tenant_id>`` when the tenant is known.
    """

    def name(path: str) -> str:
        if tenant_id and path.startswith(f"{TENANT_OBJECT}."):
            return f"_{tenant_id}{path[len(TENANT_OBJECT) :]}"
        return path

    columns = [
        TableColumn(name(path), kind, description, _REQUIRED if required else None)
        for path, kind, required, description in _FILLED_BY_THE_MAPPING
    ]
    columns += [
        TableColumn(
            name(mapping.xdm),
            CONVERSIONS[mapping.type].json_type,
            f"Mixpanel property {prop} ({mapping.type} conversion; left out when empty or "
            "not convertible)",
        )
        for prop, mapping in sorted(rules.properties.items(), key=lambda item: item[1].xdm)
    ]
    return TableSchema(columns=columns)
