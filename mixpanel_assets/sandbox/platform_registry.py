"""The local platform's Schema Registry: Adobe's XDM resources, tenant field groups and schemas.

Lookups as stored or composed, and identity descriptors listed as AEP pages them.
"""

from __future__ import annotations

import copy
import re
import secrets
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from mixpanel_assets.sandbox.platform_http import (
    Request,
    Response,
    json_answer,
    json_body,
    media_type,
    problem,
    whole_number,
)
from mixpanel_assets.sandbox.platform_state import (
    Descriptor,
    RegistryResource,
    now_ms,
)
from mixpanel_assets.sandbox.xdm_registry import (
    CLASS_ID,
    EXPERIENCE_EVENT_FIELD_GROUPS,
    IDENTITY_MAP_FIELD_GROUP,
    compose,
    global_library,
    project_field_group,
)

XED_CONTENT_TYPE = "application/vnd.adobe.xed+json;version=1"
_XED_FULL = "application/vnd.adobe.xed-full+json;version=1"
_XED_ID = "application/vnd.adobe.xed-id+json"
_DESCRIPTOR_FORMS = frozenset(
    f"application/vnd.adobe.xdm{suffix}+json" for suffix in ("", "-id", "-link")
)
# The global field groups a tenant schema may use.
_GLOBAL_FIELD_GROUPS = frozenset({IDENTITY_MAP_FIELD_GROUP, *EXPERIENCE_EVENT_FIELD_GROUPS})
# Names of the schema the ``create_dataset`` shortcut puts datasets on.
_BUILT_IN_FIELD_GROUP = "Mixpanel fields (local platform built-in)"
_BUILT_IN_SCHEMA = "Mixpanel ExperienceEvent (local platform built-in)"


class SchemaRegistryAPI:
    """The Schema Registry: tenant field groups, schemas and descriptors.

    Mixed into ``PlatformEmulator``, whose state, lock and storage it uses.
    """

    # Schema Registry -------------------------------------------------------------------------

    def _registry_stats(self, request: Request, match: re.Match[str]) -> Response:
        with self._lock:
            counts = Counter(resource.kind for resource in self._registry.values())
        return json_answer(
            200,
            {
                "imsOrg": self._org_id,
                "tenantId": self._tenant_id,
                "counts": {"schemas": counts["schemas"], "mixins": counts["fieldgroups"]},
            },
        )

    def _list_resources(self, request: Request, match: re.Match[str]) -> Response:
        """The tenant's field groups or schemas: summaries (xed-id) or as stored (xed)."""
        accept = media_type(request.headers.get("Accept"))
        if accept not in (_XED_ID, XED_CONTENT_TYPE.partition(";")[0]):
            raise problem(406, f"Send Accept: {_XED_ID} or {XED_CONTENT_TYPE}.")
        condition = _property_condition(request.param("property"))
        with self._lock:
            views = [
                self._resource_view(resource)
                for resource in sorted(self._registry.values(), key=lambda item: item.created)
                if resource.kind == match["kind"]
            ]
        if condition is not None:
            views = [view for view in views if condition(view)]
        if accept == _XED_ID:
            summary = ("$id", "meta:altId", "version", "title")
            views = [{key: view[key] for key in summary} for view in views]
        return json_answer(
            200,
            {"results": views, "_page": {"orderby": "title", "next": None, "count": len(views)}},
        )

    def _get_resource(self, request: Request, match: re.Match[str]) -> Response:
        """One field group or schema, as stored (xed) or with its references resolved (xed-full)."""
        accept = media_type(request.headers.get("Accept"), keep_version=True)
        if accept not in (XED_CONTENT_TYPE, _XED_FULL):
            raise problem(
                406, f"A lookup needs Accept: {XED_CONTENT_TYPE} or {_XED_FULL} (with version)."
            )
        with self._lock:
            resource = self._resource_or_404(match["kind"], unquote(match["id"]))
            view = self._resource_view(resource)
            if accept == _XED_FULL:
                view = {
                    **{key: value for key, value in view.items() if key != "allOf"},
                    **self._resolved(resource),
                }
        return json_answer(200, view)

    def _create_resource(self, request: Request, match: re.Match[str]) -> Response:
        body = json_body(request)
        kind = match["kind"]
        title = body.get("title")
        if not isinstance(title, str) or not title.strip():
            raise problem(400, "title is required: a non-empty string.")
        if body.get("type") != "object":
            raise problem(400, 'type must be "object".')
        with self._lock:
            if any(
                resource.kind == kind and resource.body.get("title") == title
                for resource in self._registry.values()
            ):
                raise problem(409, f"The tenant already has {kind} titled {title!r}.")
            if kind == "fieldgroups":
                self._check_field_group(body)
            else:
                self._check_schema(body)
            resource = self._add_resource(kind, body)
            self._save()
            return json_answer(201, self._resource_view(resource))

    def _check_field_group(self, body: dict[str, Any]) -> None:
        extends = body.get("meta:intendedToExtend")
        if not isinstance(extends, list) or not extends:
            raise problem(400, "meta:intendedToExtend must list the classes it may extend.")
        definitions = body.get("definitions")
        if not isinstance(definitions, dict) or not definitions:
            raise problem(400, "definitions must hold the field group's fields.")
        for name, definition in definitions.items():
            fields = definition.get("properties", {}) if isinstance(definition, dict) else None
            if not isinstance(fields, dict) or set(fields) - {f"_{self._tenant_id}"}:
                raise problem(
                    400,
                    f"definitions/{name}: custom fields must be nested under the tenant object "
                    f"_{self._tenant_id}.",
                )
        for part in _all_of(body):
            reference = part.get("$ref", "")
            if not reference.startswith("#/definitions/") or reference[14:] not in definitions:
                raise problem(400, f"allOf entry {part!r} must refer to #/definitions/<name>.")

    def _check_schema(self, body: dict[str, Any]) -> None:
        references = [part.get("$ref") for part in _all_of(body)]
        classes = [reference for reference in references if reference == CLASS_ID]
        if len(classes) != 1:
            raise problem(400, f"allOf must refer to exactly one class: {CLASS_ID}.")
        for reference in references:
            if reference == CLASS_ID or reference in _GLOBAL_FIELD_GROUPS:
                continue
            field_group = self._registry.get(str(reference))
            if field_group is None or field_group.kind != "fieldgroups":
                raise problem(400, f"allOf entry {reference!r} is not a known field group.")
            if CLASS_ID not in field_group.body.get("meta:intendedToExtend", []):
                raise problem(400, f"Field group {reference} does not extend {CLASS_ID}.")

    def _add_resource(self, kind: str, body: dict[str, Any]) -> RegistryResource:
        noun = "mixins" if kind == "fieldgroups" else "schemas"
        resource = RegistryResource(
            id=f"https://ns.adobe.com/{self._tenant_id}/{noun}/{secrets.token_hex(16)}",
            kind=kind,
            body=copy.deepcopy(body),
            created=now_ms(),
        )
        self._registry[resource.id] = resource
        return resource

    def _resource_or_404(self, kind: str, reference: str) -> RegistryResource:
        for resource in self._registry.values():
            if resource.kind == kind and reference in (resource.id, _alt_id(resource.id)):
                return resource
        raise problem(404, f"No {kind} resource {reference} in the tenant container.")

    def _resource_view(self, resource: RegistryResource) -> dict[str, Any]:
        view = copy.deepcopy(resource.body)
        view.update(
            {
                "$id": resource.id,
                "meta:altId": _alt_id(resource.id),
                "meta:resourceType": "mixins" if resource.kind == "fieldgroups" else "schemas",
                "meta:containerId": "tenant",
                "meta:tenantNamespace": f"_{self._tenant_id}",
                "imsOrg": self._org_id,
                "version": "1.0",
            }
        )
        if resource.kind == "schemas":
            references = [part["$ref"] for part in _all_of(resource.body)]
            view["meta:class"] = CLASS_ID
            view["meta:extends"] = references
        return view

    def _resolved(self, resource: RegistryResource) -> dict[str, Any]:
        """``properties`` and ``required`` of the resource with every $ref and allOf merged in."""
        return compose(resource.body, {**global_library(), **self._tenant_documents()})

    def _tenant_documents(self) -> dict[str, dict[str, Any]]:
        return {
            key: resource.body
            for key, resource in self._registry.items()
            if resource.kind == "fieldgroups"
        }

    def _built_in_schema_id(self) -> str:
        """The schema behind ``create_dataset``, registered on first use."""
        for resource in self._registry.values():
            if resource.kind == "schemas" and resource.body["title"] == _BUILT_IN_SCHEMA:
                return resource.id
        field_group = self._add_resource(
            "fieldgroups",
            {
                "title": _BUILT_IN_FIELD_GROUP,
                "type": "object",
                "meta:intendedToExtend": [CLASS_ID],
                "definitions": {"mixpanel": project_field_group(self._tenant_id)},
                "allOf": [{"$ref": "#/definitions/mixpanel"}],
            },
        )
        references = [
            CLASS_ID,
            IDENTITY_MAP_FIELD_GROUP,
            *EXPERIENCE_EVENT_FIELD_GROUPS,
            field_group.id,
        ]
        schema = self._add_resource(
            "schemas",
            {
                "title": _BUILT_IN_SCHEMA,
                "type": "object",
                "allOf": [{"$ref": reference} for reference in references],
            },
        )
        return schema.id

    def _list_descriptors(self, request: Request, match: re.Match[str]) -> Response:
        """Descriptors as objects (xdm+json), ids (xdm-id+json) or paths (xdm-link+json), grouped
        by ``@type``; with ``-v2`` (``xdm-v2+json``...) a page of ``results`` and ``_page``."""
        accept = media_type(request.headers.get("Accept"))
        paged = accept.startswith("application/vnd.adobe.xdm-v2")
        form = accept.replace("xdm-v2", "xdm", 1)
        if form not in _DESCRIPTOR_FORMS:
            raise problem(
                400,
                "The Accept header must be one of application/vnd.adobe.xdm[-v2][-id|-link]+json "
                "(no version) for the descriptors endpoint.",
            )
        condition = _property_condition(request.param("property"))
        with self._lock:
            descriptors = [
                {**descriptor.body, "@id": descriptor.id, "meta:containerId": "tenant"}
                for descriptor in self._descriptors.values()
            ]
        if condition is not None:
            descriptors = [item for item in descriptors if condition(item)]
        if not paged:
            grouped: dict[str, list[Any]] = {}
            for item in sorted(descriptors, key=lambda item: item["@id"]):
                grouped.setdefault(item["@type"], []).append(_descriptor_entry(item, form))
            return json_answer(200, grouped)
        limit = whole_number(request.param("limit") or "300", "limit", 0, 500)
        limit = min(limit, self.descriptor_page_limit)
        order = request.param("orderby") or "@id"
        field_name = order.removeprefix("-")
        if field_name not in ("@id", "@type", "xdm:sourceSchema"):
            raise problem(400, "orderby must be [-]@id, [-]@type or [-]xdm:sourceSchema.")
        descending = order.startswith("-")

        def value(item: dict[str, Any]) -> str:
            return str(item.get(field_name))

        descriptors.sort(key=lambda item: (value(item), item["@id"]), reverse=descending)
        start = request.param("start")
        if start is not None:  # where the page begins: the previous page's ``_page.next``
            descriptors = [
                item
                for item in descriptors
                if (value(item) <= start if descending else value(item) >= start)
            ]
        page, rest = descriptors[:limit], descriptors[limit:]
        return json_answer(
            200,
            {
                "results": [_descriptor_entry(item, form) for item in page],
                "_page": {
                    "orderby": order,
                    "next": value(rest[0]) if rest and page else None,
                    "count": len(page),
                },
            },
        )

    def _create_descriptor(self, request: Request, match: re.Match[str]) -> Response:
        body = json_body(request)
        if body.get("@type") != "xdm:descriptorIdentity":
            raise problem(400, "The local platform supports xdm:descriptorIdentity only.")
        with self._lock:
            schema = self._registry.get(str(body.get("xdm:sourceSchema")))
            if schema is None or schema.kind != "schemas":
                raise problem(400, "xdm:sourceSchema must be the $id of a tenant schema.")
            if body.get("xdm:sourceVersion") != 1:
                raise problem(400, "xdm:sourceVersion must be the schema's major version, 1.")
            self._check_identity_field(schema, body.get("xdm:sourceProperty"))
            namespace = body.get("xdm:namespace")
            if body.get("xdm:property") not in ("xdm:code", "xdm:id"):
                raise problem(400, 'xdm:property must be "xdm:code" or "xdm:id".')
            if not any(namespace in (known.code, known.id) for known in self._all_namespaces()):
                raise problem(400, f"xdm:namespace {namespace!r} is not an identity namespace.")
            if body.get("xdm:isPrimary") and any(
                other.body["xdm:sourceSchema"] == schema.id and other.body.get("xdm:isPrimary")
                for other in self._descriptors.values()
            ):
                raise problem(400, "Schemas may contain only one primary identity.")
            descriptor = Descriptor(id=secrets.token_hex(20), body=body, created=now_ms())
            self._descriptors[descriptor.id] = descriptor
            self._save()
        return json_answer(201, {**body, "meta:containerId": "tenant", "@id": descriptor.id})

    def _check_identity_field(self, schema: RegistryResource, pointer: Any) -> None:
        if not isinstance(pointer, str) or not pointer.startswith("/") or pointer.endswith("/"):
            raise problem(400, "xdm:sourceProperty must be a path like /a/b.")
        node: Any = {"properties": self._resolved(schema)["properties"]}
        for name in pointer[1:].split("/"):
            node = node.get("properties", {}).get(name) if isinstance(node, dict) else None
        if not isinstance(node, dict) or node.get("type") != "string":
            raise problem(400, f"xdm:sourceProperty {pointer} is not a string field of the schema.")


def _descriptor_entry(descriptor: dict[str, Any], form: str) -> Any:
    """One descriptor as the Accept header asks: the object, its id or its API path."""
    if form == "application/vnd.adobe.xdm-id+json":
        return descriptor["@id"]
    if form == "application/vnd.adobe.xdm-link+json":
        return f"/tenant/descriptors/{descriptor['@id']}"
    return descriptor


def _property_condition(text: str | None) -> Callable[[dict[str, Any]], bool] | None:
    """The Schema Registry's ``property=<name>==<value>`` (or ``!=``) filter as a predicate."""
    if not text:
        return None
    for operator in ("==", "!="):
        name, separator, value = text.partition(operator)
        if separator:
            equal = operator == "=="
            return lambda view: (str(view.get(name)) == value) == equal
    raise problem(400, "property must be <name>==<value> or <name>!=<value>.")


def _all_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    parts = body.get("allOf")
    if not isinstance(parts, list) or not all(isinstance(part, dict) for part in parts):
        raise problem(400, 'allOf must be a list of {"$ref": ...} objects.')
    return parts


def _alt_id(resource_id: str) -> str:
    """``https://ns.adobe.com/<tenant>/schemas/<id>`` -> ``_<tenant>.schemas.<id>``."""
    tenant, noun, name = resource_id.removeprefix("https://ns.adobe.com/").split("/")
    return f"_{tenant}.{noun}.{name}"
