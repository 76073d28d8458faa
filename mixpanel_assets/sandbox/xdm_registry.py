"""The local platform's global XDM container and how its Schema Registry composes a schema.

Adobe's ExperienceEvent class, field groups and data types are read as Adobe publishes them
(XDM source notation, the unmodified copy in ``mixpanel_assets/xdm/schemas/components``) and put
in AEP notation as the registry serves them: ``xdm:timestamp`` -> ``timestamp``, ``@id`` ->
``_id``, ``schema:x`` -> ``_schema.x``, no ``meta:`` keywords. Composition replaces every
``$ref`` by its target and merges every ``allOf`` (the registry's ``xed-full`` form). None of this
uses the mapping's code: the local platform judges records by the schemas alone.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import unquote

CLASS_ID = "https://ns.adobe.com/xdm/context/experienceevent"
IDENTITY_MAP_FIELD_GROUP = "https://ns.adobe.com/xdm/context/identitymap"
# The standard field groups a tenant schema of the class may use on the local platform.
EXPERIENCE_EVENT_FIELD_GROUPS = (
    "https://ns.adobe.com/xdm/context/experienceevent-environment-details",
    "https://ns.adobe.com/xdm/context/experienceevent-web",
    "https://ns.adobe.com/xdm/context/experienceevent-application",
    "https://ns.adobe.com/xdm/context/experienceevent-implementation-details",
    "https://ns.adobe.com/xdm/context/experienceevent-marketing",
)
_CONTEXT = "https://ns.adobe.com/xdm/common/extensible#/definitions/@context"
_MAX_DEPTH = 64


class CompositionError(ValueError):
    """A schema refers to something the registry does not hold, or to itself without end."""


@cache
def global_library() -> dict[str, dict[str, Any]]:
    """The global container: Adobe's shipped XDM resources by ``$id``, in AEP notation."""
    library: dict[str, dict[str, Any]] = {}
    folders = [resources.files("mixpanel_assets") / "xdm" / "schemas" / "components"]
    while folders:
        for entry in folders.pop().iterdir():
            if entry.is_dir():
                folders.append(entry)
            elif entry.name.endswith(".schema.json"):
                source = json.loads(entry.read_text(encoding="utf-8"))
                library[source["$id"]] = aep_notation(source)
    return library


def project_field_group(tenant_id: str) -> dict[str, Any]:
    """The ``_<tenant>.mixpanel`` object of this project's field group, for the built-in schema."""
    path = resources.files("mixpanel_assets") / "xdm" / "schemas" / "tenant-fieldgroup.schema.json"
    mixpanel = json.loads(path.read_text(encoding="utf-8"))
    tenant = {"type": "object", "properties": {"mixpanel": mixpanel}}
    return {"type": "object", "properties": {f"_{tenant_id}": tenant}}


def aep_notation(node: Any) -> Any:
    """A schema (or part of one) from XDM source notation into AEP notation."""
    if isinstance(node, list):
        return [aep_notation(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted: dict[str, Any] = {}
    for key, value in node.items():
        if key == "@context" or key.startswith("meta:"):
            continue
        if key == "properties" and isinstance(value, dict):
            converted[key] = _aep_properties(value)
        elif key == "required" and isinstance(value, list):
            # A prefixed field moves into its ``_<prefix>`` object: not required at the top.
            converted[key] = [name for prefix, name in map(_aep_name, value) if prefix is None]
        elif key == "allOf" and isinstance(value, list):
            converted[key] = [aep_notation(part) for part in value if part.get("$ref") != _CONTEXT]
        else:
            converted[key] = aep_notation(value)
    return converted


def _aep_properties(properties: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for source_name, schema in properties.items():
        prefix, name = _aep_name(source_name)
        if prefix is None:
            result[name] = aep_notation(schema)
        else:
            holder = result.setdefault(prefix, {"type": "object", "properties": {}})
            holder["properties"][name] = aep_notation(schema)
    return result


def _aep_name(source_name: str) -> tuple[str | None, str]:
    """(object to nest under, field name): ``xdm:a`` -> (None, a), ``@id`` -> (None, _id),
    ``repo:a`` -> (_repo, a); names without a namespace prefix stay as they are."""
    if source_name.startswith("@"):
        return None, f"_{source_name[1:]}"
    prefix, colon, name = source_name.partition(":")
    if not colon or name.startswith("//"):
        return None, source_name
    return (None, name) if prefix == "xdm" else (f"_{prefix}", name)


def compose(body: dict[str, Any], documents: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``properties`` and ``required`` of the resource ``body``, references resolved.

    Every ``$ref`` is resolved against ``documents`` (by ``$id``) and every ``allOf`` merged.
    """
    merged = _resolve(body, body, documents, 0)
    return {"properties": merged.get("properties", {}), "required": merged.get("required", [])}


def _resolve(
    node: Any, document: dict[str, Any], documents: dict[str, dict[str, Any]], depth: int
) -> Any:
    if depth > _MAX_DEPTH:
        raise CompositionError("a schema refers to itself too deeply to be resolved")
    if isinstance(node, list):
        return [_resolve(item, document, documents, depth + 1) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target_document, target = _dereference(node["$ref"], document, documents)
        return _resolve(target, target_document, documents, depth + 1)
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("allOf", "definitions", "$id", "$schema"):
            continue
        if key == "properties" and isinstance(value, dict):
            result[key] = {
                name: _resolve(child, document, documents, depth + 1)
                for name, child in value.items()
            }
        else:
            result[key] = _resolve(value, document, documents, depth + 1)
    for part in node.get("allOf", []):
        _merge(result, _resolve(part, document, documents, depth + 1))
    return result


def _dereference(
    reference: str, document: dict[str, Any], documents: dict[str, dict[str, Any]]
) -> tuple[dict[str, Any], Any]:
    address, _, pointer = reference.partition("#")
    target_document = documents.get(address) if address else document
    if target_document is None:
        raise CompositionError(f"the registry does not hold {address}")
    target: Any = target_document
    for part in filter(None, unquote(pointer).split("/")):
        target = target[part.replace("~1", "/").replace("~0", "~")]
    return target_document, target


def _merge(target: dict[str, Any], source: dict[str, Any]) -> None:
    for key, value in source.items():
        if key == "properties" and isinstance(value, dict):
            properties = target.setdefault("properties", {})
            for name, child in value.items():
                if isinstance(properties.get(name), dict) and isinstance(child, dict):
                    _merge(properties[name], child)
                else:
                    properties.setdefault(name, child)
        elif key == "required" and isinstance(value, list):
            required = target.setdefault("required", [])
            required.extend(name for name in value if name not in required)
        else:
            target.setdefault(key, value)
