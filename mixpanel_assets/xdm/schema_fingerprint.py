"""A schema's fingerprint: the SHA-256 of its composed form, to tell two schemas apart.

Design notes: docs/design-notes.md, `xdm/schema_fingerprint.py`.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import orjson

from mixpanel_assets.xdm.schema import xdm_validator

if TYPE_CHECKING:
    from referencing._core import Resolver  # not re-exported by referencing

    from mixpanel_assets.xdm.mapping import MappingSpec

# What ``map_event`` always writes under the tenant's object beside the mapped properties (the
# record's description in ``mapping._record_fact``): these must be declared too.
_TENANT_FIELDS_WRITTEN = (
    ("mixpanel", "eventName"),
    ("mixpanel", "time"),
    ("mixpanel", "properties"),
)

# Draft 6's keywords that bear on validity; a schema's other members do not.
_VALIDATION = frozenset(
    {
        *("type", "enum", "const", "format", "pattern", "minLength", "maxLength", "multipleOf"),
        *("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "required"),
        *("minItems", "maxItems", "uniqueItems", "additionalItems", "dependencies"),
        *("minProperties", "maxProperties", "properties", "allOf", "$ref"),
    }
)
_SCHEMA_KEYWORDS = frozenset({"items", "additionalProperties", "not", "propertyNames", "contains"})
_SCHEMA_LISTS = frozenset({"anyOf", "oneOf"})
_SCHEMA_MAPS = frozenset({"patternProperties"})


class Incomparable(ValueError):
    """The schema holds parts that cannot be merged into one node."""


def fingerprint(schema: dict[str, Any], resolver: Resolver | None = None) -> str | None:
    """The SHA-256 of ``schema``'s composed form (references through ``resolver``), or None."""
    try:
        form = composed(schema, resolver)
    except Incomparable:
        return None
    return hashlib.sha256(orjson.dumps(form, option=orjson.OPT_SORT_KEYS)).hexdigest()


def composed(node: dict[str, Any], resolver: Resolver | None) -> dict[str, Any]:
    """``node`` with its references inlined, its ``allOf``s merged and its annotations gone."""
    while "$ref" in node:
        if resolver is None:
            raise Incomparable(f"a reference {node['$ref']!r} with nothing to resolve it")
        resolved = resolver.lookup(node["$ref"])
        node, resolver = resolved.contents, resolved.resolver
    form: dict[str, Any] = {}
    parts: list[dict[str, Any]] = []
    for key, value in node.items():
        known = key in _VALIDATION or key in _SCHEMA_KEYWORDS
        if not (known or key in _SCHEMA_LISTS or key in _SCHEMA_MAPS):
            continue
        if key == "allOf":
            parts += [composed(part, resolver) for part in value]
        elif key == "properties":
            form[key] = {name: composed(child, resolver) for name, child in value.items()}
        elif key in _SCHEMA_KEYWORDS and isinstance(value, dict):
            form[key] = composed(value, resolver)
        elif key in _SCHEMA_LISTS:
            form[key] = [composed(part, resolver) for part in value]
        elif key in _SCHEMA_MAPS:
            form[key] = {name: composed(child, resolver) for name, child in value.items()}
        elif key == "required":
            form[key] = sorted(set(value))
        elif key == "type" and isinstance(value, list) and len(value) == 1:
            form[key] = value[0]
        else:
            form[key] = value
    for part in parts:
        _merge(form, part)
    return form


def _merge(form: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if key == "properties":
            properties = form.setdefault("properties", {})
            for name, child in value.items():
                if name in properties:
                    _merge(properties[name], child)
                else:
                    properties[name] = child
        elif key == "required":
            form[key] = sorted({*form.get(key, ()), *value})
        elif key not in form:
            form[key] = value
        elif form[key] != value:
            raise Incomparable(f"two values of {key!r} where parts of an allOf meet")


def proved_fingerprint(spec: MappingSpec) -> str | None:
    """The fingerprint of the schema ``spec``'s mapping proves its records against, or None.

    There is one when the proof holds (``validity``) and the schema, closed as the target check
    closes it, declares every field the mapping writes; else None (the records are then checked
    against the dataset's schema one by one).
    """
    compiled = spec.compiled
    if compiled.proof is None:
        return None
    validator = xdm_validator(spec.tenant_id, compiled.custom_tenant_fields)
    resolver = validator._resolver  # the project's registry of Adobe's schemas
    try:
        form = composed(validator.schema, resolver)
    except Incomparable:
        return None
    tenant = compiled.tenant_key
    written = [*compiled.record_paths, *((tenant, *path) for path in _TENANT_FIELDS_WRITTEN)]
    if not all(_declares(form, path) for path in written):
        return None
    return fingerprint(validator.schema, resolver)


def _declares(schema: dict[str, Any], path: tuple[str, ...]) -> bool:
    """Whether ``schema`` (composed) admits a field at ``path`` once closed as
    ``aep.target_schema.closed`` closes it: each name listed in its object's ``properties``, or
    in an object that stays open (``additionalProperties`` not false, or given by ``anyOf`` or
    ``oneOf``), whose schema then judges everything under it."""
    node = schema
    for name in path:
        if name in node.get("properties", {}):
            node = node["properties"][name]
            continue
        extra = node.get("additionalProperties")
        return (
            isinstance(extra, dict)
            or extra is True
            or (extra is None and ("anyOf" in node or "oneOf" in node or "properties" not in node))
        )
    return True
