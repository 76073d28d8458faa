"""The record schema with its references inlined, cut down to the fields a mapping writes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mixpanel_assets.xdm.record_walks import Shape

if TYPE_CHECKING:
    from referencing._core import Resolver  # not re-exported by referencing


def cut_schema(
    node: dict[str, Any], resolver: Resolver, shape: Shape | None, refs: tuple[int, ...] = ()
) -> dict[str, Any]:
    """``node`` with its ``$ref``s inlined and, where ``shape`` says so, only the fields it names.

    Annotations are dropped and ``allOf``s merged where they only add fields. A shape of None
    keeps the whole subtree; a field left out of ``shape`` that has a ``default`` is kept (the
    validators write it into the record) and added to ``shape``. Why the verdict stays the same
    on a record whose fields all lie on ``shape``: docs/mapping.md, "The record checks".
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
        if key in ANNOTATIONS:
            continue
        if key == "properties":
            cut[key] = {}
            for name, child in value.items():
                if shape is not None and name not in shape:
                    if "default" not in child:
                        continue
                    shape[name] = None  # the validators write the default into the record
                child_shape = None if shape is None else shape[name]
                cut[key][name] = cut_schema(child, resolver, child_shape, refs)
                if "default" in child:
                    cut[key][name]["default"] = child["default"]
        elif key == "allOf":
            parts = [cut_schema(part, resolver, shape, refs) for part in value]
        elif isinstance(value, dict) and key in _SUBSCHEMA:
            cut[key] = cut_schema(value, resolver, None, refs)
        elif isinstance(value, list) and key in _SUBSCHEMAS:
            cut[key] = [cut_schema(part, resolver, None, refs) for part in value]
        elif key in _SUBSCHEMA_MAPS:
            cut[key] = {
                name: cut_schema(child, resolver, None, refs) if isinstance(child, dict) else child
                for name, child in value.items()
            }
        else:
            cut[key] = value
    return _conjunction(cut, parts)


ANNOTATIONS = frozenset(
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
