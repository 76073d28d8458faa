"""Adobe's official XDM schemas, converted to the AEP notation a batch carries, as validators.

Design notes (the notation, the tenant field group, the fast checks): docs/mapping.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, cast

import fastjsonschema
from jsonschema import Draft6Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT6

from mixpanel_assets.xdm.generated_code import written_check
from mixpanel_assets.xdm.record_walks import Shape, has_empty_value, shape_of, within
from mixpanel_assets.xdm.schema_cut import ANNOTATIONS, cut_schema

if TYPE_CHECKING:
    from referencing._core import Resolver  # not re-exported by referencing

CLASS_ID = "https://ns.adobe.com/xdm/context/experienceevent"
# The standard field groups the mapping fills, besides the class's own identityMap and time-series.
FIELD_GROUP_IDS = (
    "https://ns.adobe.com/xdm/context/experienceevent-environment-details",
    "https://ns.adobe.com/xdm/context/experienceevent-web",
    "https://ns.adobe.com/xdm/context/experienceevent-application",
    "https://ns.adobe.com/xdm/context/experienceevent-implementation-details",
    "https://ns.adobe.com/xdm/context/experienceevent-marketing",
)
_CONTEXT_REF = "https://ns.adobe.com/xdm/common/extensible#/definitions/@context"
_TENANT_FIELD_GROUP = "tenant-fieldgroup.schema.json"

# RFC 3339 section 5.6 date-time, as AEP requires for `timestamp`.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
# RFC 3986 URI-reference: only unreserved, reserved and percent-encoded characters.
_URI_REFERENCE = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*$")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*$")
_TENANT_ID = re.compile(r"^[A-Za-z0-9_]+$")
# Mapping specs write ``_tenant`` for the tenant object ``_<AEP_TENANT_ID>``.
TENANT_PLACEHOLDER = "tenant"
# (path below ``_<tenant>``, JSON type): a typed custom field a mapping spec adds.
CustomField = tuple[tuple[str, ...], str]
# Paths of fields (``("device", "screenHeight")``) a record may hold: the fields a mapping writes.
FieldPaths = frozenset[tuple[str, ...]]
# Keywords that constrain a value beyond its JSON type.
_VALUE_CONSTRAINTS = frozenset(
    {
        "pattern",
        "enum",
        "const",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "multipleOf",
    }
)

_format_checker = FormatChecker(formats=())


@_format_checker.checks("date-time")
def is_rfc3339(value: object) -> bool:
    """Whether ``value`` (if a string) is an RFC 3339 date-time, as AEP requires."""
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        return False
    try:
        datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        return False
    return True


@_format_checker.checks("uri-reference")
def _is_uri_reference(value: object) -> bool:
    return not isinstance(value, str) or bool(_URI_REFERENCE.match(value))


@_format_checker.checks("uri")
def _is_uri(value: object) -> bool:
    return not isinstance(value, str) or bool(_URI.match(value))


def _aep_name(source_name: str) -> tuple[str | None, str]:
    """``xdm:foo`` -> (None, "foo"); ``@id`` -> (None, "_id"); ``schema:x`` -> ("_schema", "x")."""
    if source_name.startswith("@"):
        return None, "_" + source_name[1:]
    prefix, sep, name = source_name.partition(":")
    if not sep or "//" in name:
        return None, source_name
    if prefix == "xdm":
        return None, name
    return "_" + prefix, name


def to_aep_notation(node: Any) -> Any:
    """Convert one schema (or any part of one) from XDM source notation to AEP notation."""
    if isinstance(node, list):
        return [to_aep_notation(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            converted[key] = _convert_properties(value)
        elif key == "required" and isinstance(value, list):
            converted[key] = [name for prefix, name in map(_aep_name, value) if prefix is None]
        elif key == "allOf" and isinstance(value, list):
            converted[key] = [
                to_aep_notation(part) for part in value if part.get("$ref") != _CONTEXT_REF
            ]
        elif key == "@context" or key.startswith("meta:"):
            continue
        else:
            converted[key] = to_aep_notation(value)
    return converted


def _convert_properties(properties: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for source_name, sub_schema in properties.items():
        prefix, name = _aep_name(source_name)
        if prefix is None:
            result[name] = to_aep_notation(sub_schema)
        else:
            group = result.setdefault(prefix, {"type": "object", "properties": {}})
            group["properties"][name] = to_aep_notation(sub_schema)
    return result


def _schema_files() -> Iterator[dict[str, Any]]:
    root = resources.files("mixpanel_assets.xdm") / "schemas" / "components"
    stack = [root]
    while stack:
        folder = stack.pop()
        for entry in folder.iterdir():
            if entry.is_dir():
                stack.append(entry)
            elif entry.name.endswith(".schema.json"):
                yield json.loads(entry.read_text(encoding="utf-8"))


@cache
def _official_registry() -> Registry:
    registry: Registry = Registry()
    for schema in _schema_files():
        resource = Resource(contents=to_aep_notation(schema), specification=DRAFT6)
        registry = registry.with_resource(schema["$id"], resource)
    return registry


def tenant_field_group(
    tenant_id: str, custom_fields: tuple[CustomField, ...] = ()
) -> dict[str, Any]:
    """This project's field group in AEP notation: ``_<tenant>.mixpanel`` and custom fields.

    The typed custom fields are those a mapping spec adds under ``_<tenant>`` (create the same in
    AEP).
    """
    if not _TENANT_ID.match(tenant_id):
        raise ValueError(
            f"AEP_TENANT_ID {tenant_id!r} is not a tenant id: use the id AEP shows for your "
            "organisation (letters, digits and underscores, without the leading underscore)."
        )
    text = (resources.files("mixpanel_assets.xdm") / "schemas" / _TENANT_FIELD_GROUP).read_text(
        encoding="utf-8"
    )
    mixpanel_object = json.loads(text)
    tenant_object: dict[str, Any] = {"type": "object", "properties": {"mixpanel": mixpanel_object}}
    for path, json_type in custom_fields:
        node = tenant_object
        for name in path[:-1]:
            node = node["properties"].setdefault(name, {"type": "object", "properties": {}})
        node["properties"][path[-1]] = {"type": json_type}
    return {"type": "object", "properties": {f"_{tenant_id}": tenant_object}}


def experience_event_schema(
    tenant_id: str, custom_fields: tuple[CustomField, ...] = ()
) -> dict[str, Any]:
    """The dataset schema our records target: the class, the field groups and the tenant group."""
    return {
        "$schema": "http://json-schema.org/draft-06/schema#",
        "type": "object",
        "allOf": [
            {"$ref": CLASS_ID},
            *({"$ref": field_group} for field_group in FIELD_GROUP_IDS),
            tenant_field_group(tenant_id, custom_fields),
        ],
    }


@cache
def xdm_validator(tenant_id: str, custom_fields: tuple[CustomField, ...] = ()) -> Draft6Validator:
    """A validator for one ExperienceEvent record in AEP notation (cached per tenant)."""
    return Draft6Validator(
        experience_event_schema(tenant_id, custom_fields),
        registry=_official_registry(),
        format_checker=_format_checker,
    )


_FORMATS = {"date-time": is_rfc3339, "uri-reference": _is_uri_reference, "uri": _is_uri}


@cache
def _compiled_validator(
    tenant_id: str, custom_fields: tuple[CustomField, ...] = ()
) -> Callable[[dict[str, Any]], Any]:
    """The same schema compiled to Python code: ~35x faster, but it stops at the first error."""
    registry = _official_registry()
    return fastjsonschema.compile(
        experience_event_schema(tenant_id, custom_fields),
        handlers={"https": registry.contents, "http": registry.contents},
        formats=_FORMATS,
    )


def schema_errors(
    record: dict[str, Any], tenant_id: str, custom_fields: tuple[CustomField, ...] = ()
) -> list[str]:
    """Every way ``record`` breaks the schema, as ``path: message`` strings (empty when valid).

    Valid records, nearly all of them, take the compiled fast path; only an invalid one is
    walked again by jsonschema to list all of its errors. (Callers with many records take
    ``record_validator`` first.)
    """
    if record_validator(tenant_id, custom_fields)(record):
        return []
    errors = []
    for error in xdm_validator(tenant_id, custom_fields).iter_errors(record):
        path = "/".join(str(part) for part in error.absolute_path) or "(record)"
        errors.append(f"{path}: {error.message}")
    return sorted(errors)


@cache
def record_validator(
    tenant_id: str, custom_fields: tuple[CustomField, ...] = (), paths: FieldPaths = frozenset()
) -> Callable[[Any], bool]:
    """The schema's verdict on a record (True when valid), as fast as it can be had.

    A record whose fields all lie on ``paths`` (the fields a mapping writes) is checked by
    Python code generated from the schema cut down to those paths (``schema_cut``,
    ``generated_code``): a few microseconds instead of the tens the whole compiled schema takes,
    with the same verdict. Any other record is checked against the whole compiled schema.
    """
    valid_in_full = _verdict_of(_compiled_validator(tenant_id, custom_fields))
    if not paths:
        return valid_in_full
    check, shape = _generated_check(tenant_id, custom_fields, paths)

    def valid(record: Any) -> bool:
        verdict = check(record)
        # None: a field off the paths. False may come before such a field is reached.
        if verdict is None or (not verdict and not within(record, shape)):
            return valid_in_full(record)
        return verdict

    return valid


@cache
def record_acceptor(
    tenant_id: str, custom_fields: tuple[CustomField, ...], paths: FieldPaths
) -> Callable[[Any], bool]:
    """True, in one pass, for a record on ``paths`` with no empty value that the schema accepts.

    The record's defaults are written, as ``record_validator`` writes them. False is no verdict:
    the record may still be good, and the caller looks closer with ``empty_value_paths`` and
    ``record_validator``. Most records of a mapped day take one pass.
    """
    check, _ = _generated_check(tenant_id, custom_fields, paths, reject_empty_values=True)
    return lambda record: check(record) is True


def _generated_check(
    tenant_id: str,
    custom_fields: tuple[CustomField, ...],
    paths: FieldPaths,
    *,
    reject_empty_values: bool = False,
) -> tuple[Callable[[Any], bool | None], Shape]:
    """The check written for ``paths``, and their shape with the fields defaults add."""
    cut, shape = cut_record_schema_and_shape(tenant_id, custom_fields, paths)
    return written_check(cut, shape, _FORMATS, reject_empty_values=reject_empty_values), shape


def cut_record_schema_and_shape(
    tenant_id: str, custom_fields: tuple[CustomField, ...], paths: FieldPaths
) -> tuple[dict[str, Any], Shape]:
    """The record schema cut down to ``paths``, and their shape with the fields defaults add."""
    shape = shape_of(paths)
    schema = experience_event_schema(tenant_id, custom_fields)
    return cut_schema(schema, _official_registry().resolver(), shape), shape


def cut_record_schema(
    tenant_id: str, custom_fields: tuple[CustomField, ...], paths: FieldPaths
) -> dict[str, Any]:
    """The record schema with its references inlined, cut down to ``paths``.

    What ``validity.prove`` walks (``schema_cut.cut_schema``).
    """
    return cut_record_schema_and_shape(tenant_id, custom_fields, paths)[0]


def node_check(node: dict[str, Any]) -> Callable[[Any], bool]:
    """The verdict of one schema node (no references) on a value, as fastjsonschema gives it."""
    # Without a shape the written check answers True or False, never None.
    return cast(Callable[[Any], bool], written_check(node, None, _FORMATS))


@cache
def field_schemas(path: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    """The schema nodes that define the field at ``path`` (AEP notation); () if none.

    ``_tenant`` stands for the tenant object; the class, the field groups and the shipped tenant
    group are searched.
    """
    nodes = _root_nodes()
    for name in path:
        found = []
        for node, resolver in nodes:
            child = node.get("properties", {}).get(name)
            if isinstance(child, dict):
                found.extend(_expanded_nodes(child, resolver))
        nodes = found
    return tuple(node for node, _ in nodes)


@cache
def value_checker(path: tuple[str, ...]) -> Callable[[Any], bool] | None:
    """A test of what the schema asks of the value at ``path`` beyond its type, or None.

    The constraints are pattern, enum, format, bounds...; None when the type is all there is.
    """
    nodes = field_schemas(path)
    if not any(_VALUE_CONSTRAINTS & node.keys() for node in nodes):
        return None
    if len(nodes) == 1 and "$ref" not in nodes[0]:  # most fields: inline code, same verdict
        leaf = {
            key: value
            for key, value in nodes[0].items()
            if key not in ANNOTATIONS and not key.startswith("meta:")
        }
        # Without a shape the written check answers True or False, never None.
        return cast(Callable[[Any], bool], written_check(leaf, None, _FORMATS))
    leaf_schema = {
        "allOf": [{key: value for key, value in node.items() if key != "$ref"} for node in nodes]
    }
    return _verdict_of(fastjsonschema.compile(leaf_schema, formats=_FORMATS))


def _verdict_of(validate: Callable[[Any], Any]) -> Callable[[Any], bool]:
    """A compiled fastjsonschema validator as a yes/no test instead of one that raises."""

    def verdict(value: Any) -> bool:
        try:
            validate(value)
        except fastjsonschema.JsonSchemaValueException:
            return False
        return True

    return verdict


@cache
def _root_nodes() -> list[tuple[dict[str, Any], Resolver]]:
    schema = experience_event_schema(TENANT_PLACEHOLDER)
    return _expanded_nodes(schema, _official_registry().resolver())


def _expanded_nodes(
    node: dict[str, Any], resolver: Resolver
) -> list[tuple[dict[str, Any], Resolver]]:
    """``node`` and every schema it pulls in through ``$ref`` and ``allOf``."""
    expanded = []
    pending = [(node, resolver)]
    while pending:
        current, current_resolver = pending.pop()
        if "$ref" in current:
            resolved = current_resolver.lookup(current["$ref"])
            pending.append((resolved.contents, resolved.resolver))
        pending.extend((part, current_resolver) for part in current.get("allOf", ()))
        expanded.append((current, current_resolver))
    return expanded


def empty_value_paths(value: Any) -> list[str]:
    """Paths holding null or an empty string, list or object: AEP rejects them all."""
    return _empty_value_paths(value, "") if has_empty_value(value) else []


def _empty_value_paths(value: Any, path: str) -> list[str]:
    if value is None or value == "" or value == [] or value == {}:
        return [path or "(record)"]
    found: list[str] = []
    if isinstance(value, dict):
        for key, child in value.items():
            found.extend(_empty_value_paths(child, f"{path}/{key}" if path else key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.extend(_empty_value_paths(child, f"{path}/{index}"))
    return found
