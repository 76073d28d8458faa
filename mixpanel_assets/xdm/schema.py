"""Adobe's official XDM schemas, converted to the AEP notation a batch carries, as a validator.

The shipped files (``schemas/components``, CC BY 4.0, see ``schemas/README.md``) are in XDM source
notation: ``xdm:timestamp``, ``@id``, ``schema:latitude``. A record sent to AEP uses ``timestamp``,
``_id`` and ``_schema.latitude``. Rather than translate every record back, we translate the schemas
once, following the rules of Adobe's own converter: drop the ``xdm:`` prefix, ``@id`` becomes
``_id``, any other ``prefix:name`` becomes ``name`` inside an object ``_prefix``, and the JSON-LD
``@context`` constraint (which only admits prefixed keys) is removed.

The tenant field group (``_<tenant>``) is this project's own; its schema ships beside the official
ones and is mounted under the configured tenant id, together with any typed custom fields a
mapping spec adds under ``_tenant``.

``field_schemas`` answers, when a mapping spec loads, what (if anything) the schema says about a
path, so that a typo in a mapping file fails at once instead of sending data nowhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, cast

import fastjsonschema
from jsonschema import Draft6Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT6

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
# Those paths as nested names; None below a name: the field is checked with its whole schema.
_Shape = dict[str, "_Shape | None"]
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
    """This project's field group, in AEP notation: the ``_<tenant>.mixpanel`` object plus the
    typed custom fields a mapping spec adds under ``_<tenant>`` (create the same in AEP)."""
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
    Python code generated from the schema cut down to those paths (``_cut_schema``,
    ``_CheckWriter``): a few microseconds instead of the tens the whole compiled schema takes,
    with the same verdict. Any other record is checked against the whole compiled schema.
    """
    valid_in_full = _verdict_of(_compiled_validator(tenant_id, custom_fields))
    if not paths:
        return valid_in_full
    check, shape = _generated_check(tenant_id, custom_fields, paths)

    def valid(record: Any) -> bool:
        verdict = check(record)
        # None: a field off the paths. False may come before such a field is reached.
        if verdict is None or (not verdict and not _within(record, shape)):
            return valid_in_full(record)
        return verdict

    return valid


@cache
def record_acceptor(
    tenant_id: str, custom_fields: tuple[CustomField, ...], paths: FieldPaths
) -> Callable[[Any], bool]:
    """In one pass, True for a record on ``paths`` that holds no null or empty value and that
    the schema accepts (its defaults written, as ``record_validator`` writes them).

    False is no verdict: the record may still be good, and the caller looks closer with
    ``empty_value_paths`` and ``record_validator``. Most records of a mapped day take one pass.
    """
    check, _ = _generated_check(tenant_id, custom_fields, paths, reject_empty_values=True)
    return lambda record: check(record) is True


def _generated_check(
    tenant_id: str,
    custom_fields: tuple[CustomField, ...],
    paths: FieldPaths,
    *,
    reject_empty_values: bool = False,
) -> tuple[Callable[[Any], bool | None], _Shape]:
    """The check written for ``paths``, and their shape with the fields defaults add."""
    shape = _shape(paths)
    schema = experience_event_schema(tenant_id, custom_fields)
    cut = _cut_schema(schema, _official_registry().resolver(), shape)  # adds to ``shape``
    return _CheckWriter(reject_empty_values=reject_empty_values).function(cut, shape), shape


def cut_record_schema(
    tenant_id: str, custom_fields: tuple[CustomField, ...], paths: FieldPaths
) -> dict[str, Any]:
    """The record schema with its references inlined, cut down to ``paths`` (``_cut_schema``):
    what ``validity.prove`` walks."""
    schema = experience_event_schema(tenant_id, custom_fields)
    return _cut_schema(schema, _official_registry().resolver(), _shape(paths))


def node_check(node: dict[str, Any]) -> Callable[[Any], bool]:
    """The verdict of one schema node (no references) on a value, as fastjsonschema gives it."""
    # Without a shape the written check answers True or False, never None.
    return cast(Callable[[Any], bool], _CheckWriter().function(node, None))


def _shape(paths: FieldPaths) -> _Shape:
    shape: _Shape = {}
    for path in sorted(paths, key=len):
        node = shape
        for name in path[:-1]:
            child = node.setdefault(name, {})
            if child is None:  # a shorter path already takes this whole subtree
                break
            node = child
        else:
            node[path[-1]] = None
    return shape


def _within(record: Any, shape: _Shape) -> bool:
    """Whether every field of ``record``, at every depth ``shape`` describes, is on ``shape``."""
    if not isinstance(record, dict):
        return False
    pending = [(record, shape)]
    while pending:
        node, node_shape = pending.pop()
        for name, child in node.items():
            if name not in node_shape:
                return False
            child_shape = node_shape[name]
            if child_shape is not None and isinstance(child, dict):
                pending.append((child, child_shape))
    return True


def _cut_schema(
    node: dict[str, Any], resolver: Resolver, shape: _Shape | None, refs: tuple[int, ...] = ()
) -> dict[str, Any]:
    """``node`` with its ``$ref``s inlined, its annotations dropped, its ``allOf``s merged
    where they only add fields, and, where ``shape`` says so, only the ``properties`` it names.

    Why the verdict is the same on a record whose fields all lie on ``shape``: a dropped
    ``properties`` entry only ever constrains a field the record lacks; ``required``,
    ``additionalProperties`` and every other keyword stay; a ``$ref`` overrides its siblings in
    draft 6 (as in both validators), so it becomes the node it points to; and the conjunction
    of ``allOf`` parts that hold only ``type``, ``properties`` and ``required`` is one node with
    the same type, the properties of both (a field in both: ``allOf`` of its two schemas) and
    every required name. A shape of None keeps the whole subtree.

    Both validators write a missing field's ``default`` (the schema's, on the field's own node)
    into the record, so such a field is kept with its default, and added to ``shape``.
    """
    while "$ref" in node:
        resolved = resolver.lookup(node["$ref"])
        if id(resolved.contents) in refs:
            raise ValueError(f"the schema recurses through {node['$ref']}: it cannot be inlined")
        node, resolver = resolved.contents, resolved.resolver
        refs = (*refs, id(node))
    cut: dict[str, Any] = {}
    parts: list[dict[str, Any]] = []
    for key, value in node.items():
        if key in _ANNOTATIONS:
            continue
        if key == "properties":
            cut[key] = {}
            for name, child in value.items():
                if shape is not None and name not in shape:
                    if "default" not in child:
                        continue
                    shape[name] = None  # the validators write the default into the record
                child_shape = None if shape is None else shape[name]
                cut[key][name] = _cut_schema(child, resolver, child_shape, refs)
                if "default" in child:
                    cut[key][name]["default"] = child["default"]
        elif key == "allOf":
            parts = [_cut_schema(part, resolver, shape, refs) for part in value]
        elif isinstance(value, dict) and key in _SUBSCHEMA:
            cut[key] = _cut_schema(value, resolver, None, refs)
        elif isinstance(value, list) and key in _SUBSCHEMAS:
            cut[key] = [_cut_schema(part, resolver, None, refs) for part in value]
        elif key in _SUBSCHEMA_MAPS:
            cut[key] = {
                name: _cut_schema(child, resolver, None, refs) if isinstance(child, dict) else child
                for name, child in value.items()
            }
        else:
            cut[key] = value
    return _conjunction(cut, parts)


_ANNOTATIONS = frozenset(
    {"title", "description", "$id", "$schema", "definitions", "examples", "default"}
)
_MERGEABLE = frozenset({"type", "properties", "required"})
# Draft-6 keywords holding a schema, a list of schemas or a map of them: inlined whole.
_SUBSCHEMA = frozenset(
    {"items", "additionalItems", "additionalProperties", "contains", "propertyNames", "not"}
)
_SUBSCHEMAS = frozenset({"items", "anyOf", "oneOf"})
_SUBSCHEMA_MAPS = frozenset({"patternProperties", "dependencies"})


def _conjunction(node: dict[str, Any], parts: list[dict[str, Any]]) -> dict[str, Any]:
    """``node`` and every one of ``parts``, as ``allOf`` does, with fewer nodes to visit.

    A part of only ``type``, ``properties`` and ``required`` is merged into ``node`` when their
    types agree, ``node`` has no ``additionalProperties`` or ``patternProperties`` (which
    depend on what ``properties`` lists) and no field of both has a default; the other parts
    stay in ``allOf``.
    """
    remaining = []
    for part in parts:
        shared = node.get("properties", {}).keys() & part.get("properties", {}).keys()
        mergeable = (
            part.keys() <= _MERGEABLE
            and not any(
                "default" in node["properties"][name] or "default" in part["properties"][name]
                for name in shared
            )
            and "additionalProperties" not in node
            and "patternProperties" not in node
            and ("type" not in part or "type" not in node or part["type"] == node["type"])
        )
        if not mergeable:
            remaining.append(part)
            continue
        if "type" in part:
            node["type"] = part["type"]
        properties = node.setdefault("properties", {})
        for name, child in part.get("properties", {}).items():
            properties[name] = (
                _conjunction({}, [properties[name], child]) if name in properties else child
            )
        if "required" in part:
            node["required"] = sorted({*node.get("required", ()), *part["required"]})
    if remaining:
        node["allOf"] = remaining
    if node.get("properties") == {}:
        del node["properties"]
    return node


# fastjsonschema's draft-6 type tests, for a leaf whose schema is a single type and nothing else.
_TYPE_TESTS = {
    "string": "isinstance({0}, str)",
    "boolean": "isinstance({0}, bool)",
    "object": "isinstance({0}, dict)",
    "array": "isinstance({0}, (list, tuple))",
    "null": "{0} is None",
    "number": "isinstance({0}, (int, float, Decimal)) and not isinstance({0}, bool)",
    "integer": (
        "(isinstance({0}, int) or (isinstance({0}, float) and {0}.is_integer())) "
        "and not isinstance({0}, bool)"
    ),
}
# Keywords the writer turns into inline tests; a node with any other is handed to fastjsonschema.
_INLINE_KEYWORDS = frozenset(
    {"type", "properties", "required", "additionalProperties", "items", "format", "enum"}
    | {"pattern", "default"}  # a field's default is its parent's to write
)
_OBJECT_KEYWORDS = frozenset({"properties", "required", "additionalProperties"})
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")
_MISSING = object()


class _CheckWriter:
    """Writes, from a cut schema and its shape, one Python function of a record that returns
    True (valid), False (invalid) or None (a field off the shape: the cut schema cannot judge).

    Nodes of a single type whose other keywords are among ``_INLINE_KEYWORDS`` become inline
    tests with fastjsonschema's own semantics (its draft-6 type tests; ``format``, ``enum`` and
    ``pattern`` only on strings; ``additionalProperties`` a schema or false; ``items`` one
    schema; a missing field's ``default`` written into the record); any other node is checked by
    fastjsonschema, compiled for it alone, once its fields are found on the shape. Where the
    shape goes, an object's fields must all be on it, or the answer is None. With
    ``reject_empty_values``, a null or empty value anywhere in the record also answers False.
    """

    def __init__(self, *, reject_empty_values: bool = False) -> None:
        self._reject_empty_values = reject_empty_values
        self._lines = ["def check(record):"]
        self._names: dict[str, Any] = {
            "MISSING": _MISSING,
            "Invalid": fastjsonschema.JsonSchemaValueException,
            "Decimal": Decimal,
            "within": _within,
            "has_empty_value": _has_empty_value,
        }

    def function(
        self, schema: dict[str, Any], shape: _Shape | None
    ) -> Callable[[Any], bool | None]:
        self._node(schema, shape, "record", 1)
        self._lines.append("    return True")
        exec("\n".join(self._lines), self._names)  # source built here from the schema alone
        return self._names["check"]

    def _name(self, value: Any) -> str:
        name = f"c{len(self._names)}"
        self._names[name] = value
        return name

    def _add(self, depth: int, line: str) -> None:
        self._lines.append("    " * depth + line)

    def _node(self, schema: dict[str, Any], shape: _Shape | None, var: str, depth: int) -> None:
        kind = schema.get("type")
        if not (
            schema.keys() <= _INLINE_KEYWORDS
            and _TYPE_TESTS.get(str(kind))
            and (shape is None or kind == "object")
            and ("format" not in schema or schema["format"] in _FORMATS)
            and ({"format", "enum", "pattern"}.isdisjoint(schema) or kind == "string")
            and (_OBJECT_KEYWORDS.isdisjoint(schema) or kind == "object")
            and ("items" not in schema or kind == "array")
            and all(isinstance(value, str) for value in schema.get("enum", ()))
            and schema.get("additionalProperties", False) is not True
            and isinstance(schema.get("items", {}), dict)
        ):
            self._handed_over(schema, shape, var, depth)
            return
        self._add(depth, f"if not ({_TYPE_TESTS[kind].format(var)}): return False")
        if self._reject_empty_values and kind in ("string", "object", "array"):
            self._add(depth, f"if not {var}: return False")
        if "format" in schema:
            test = self._name(_FORMATS[schema["format"]])
            self._add(depth, f"if not {test}({var}): return False")
        if "enum" in schema:
            self._add(
                depth, f"if {var} not in {self._name(frozenset(schema['enum']))}: return False"
            )
        if "pattern" in schema:  # as fastjsonschema reads it: searched, any ``$`` the very end
            pattern = re.compile(_UNESCAPED_DOLLAR.sub(r"\\Z", schema["pattern"]))
            self._add(depth, f"if not {self._name(pattern.search)}({var}): return False")
        if shape is not None:
            self._add(depth, f"if not {var}.keys() <= {self._name(frozenset(shape))}: return None")
        for name in schema.get("required", ()):
            self._add(depth, f"if {name!r} not in {var}: return False")
        properties = schema.get("properties", {})
        for name, child in properties.items():
            child_var = f"v{len(self._lines)}"
            self._add(depth, f"{child_var} = {var}.get({name!r}, MISSING)")
            self._add(depth, f"if {child_var} is not MISSING:")
            self._node(child, None if shape is None else shape[name], child_var, depth + 1)
            if "default" in child:  # as fastjsonschema does, a fresh value each time
                self._add(depth, f"else: {var}[{name!r}] = {child['default']!r}")
        open_object = kind == "object" and "additionalProperties" not in schema
        if self._reject_empty_values and open_object and shape is None:  # names off the schema
            key, value = f"k{len(self._lines)}", f"v{len(self._lines)}"
            self._add(depth, f"for {key}, {value} in {var}.items():")
            self._add(
                depth + 1,
                f"if {key} not in {self._name(frozenset(properties))} "
                f"and has_empty_value({value}): return False",
            )
        if "additionalProperties" in schema:
            key, value = f"k{len(self._lines)}", f"v{len(self._lines)}"
            self._add(depth, f"for {key}, {value} in {var}.items():")
            self._add(depth + 1, f"if {key} in {self._name(frozenset(properties))}: continue")
            extra = schema["additionalProperties"]
            if extra is False:
                self._add(depth + 1, "return False")
            else:
                self._node(extra, None, value, depth + 1)
        if "items" in schema:
            item = f"i{len(self._lines)}"
            self._add(depth, f"for {item} in {var}:")
            self._node(schema["items"], None, item, depth + 1)

    def _handed_over(
        self, schema: dict[str, Any], shape: _Shape | None, var: str, depth: int
    ) -> None:
        if shape is not None:
            self._add(depth, f"if not within({var}, {self._name(shape)}): return None")
        if self._reject_empty_values:
            self._add(depth, f"if has_empty_value({var}): return False")
        validate = self._name(fastjsonschema.compile(schema, formats=_FORMATS))
        self._add(depth, "try:")
        self._add(depth + 1, f"{validate}({var})")
        self._add(depth, "except Invalid:")
        self._add(depth + 1, "return False")


@cache
def field_schemas(path: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    """The schema nodes that define the field at ``path`` (AEP notation, ``_tenant`` for the
    tenant object) in the class, the field groups and the shipped tenant group; () if none."""
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
    """A test of the constraints (pattern, enum, format, bounds...) the schema puts on the value
    at ``path`` beyond its type; None when the type is all there is to it."""
    nodes = field_schemas(path)
    if not any(_VALUE_CONSTRAINTS & node.keys() for node in nodes):
        return None
    if len(nodes) == 1 and "$ref" not in nodes[0]:  # most fields: inline code, same verdict
        leaf = {
            key: value
            for key, value in nodes[0].items()
            if key not in _ANNOTATIONS and not key.startswith("meta:")
        }
        # Without a shape the written check answers True or False, never None.
        return cast(Callable[[Any], bool], _CheckWriter().function(leaf, None))
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
    return _empty_value_paths(value, "") if _has_empty_value(value) else []


def _has_empty_value(value: Any) -> bool:
    """The quick yes/no behind ``empty_value_paths``, run on every record: a loop over parsed
    JSON (plain dicts and lists, hence ``type`` rather than ``isinstance``)."""
    pending = [value]
    while pending:
        current = pending.pop()
        kind = type(current)
        if kind is dict:
            if not current:
                return True
            pending.extend(current.values())
        elif kind is list:
            if not current:
                return True
            pending.extend(current)
        elif current is None or (kind is str and not current):
            return True
    return False


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
