"""The vendors' OpenAPI documents (``openapi/``, unchanged copies) ready for openapi-core.

Each document is served under the base path its vendor gives it, on any host (the emulators
listen on 127.0.0.1). The Schema Registry's is Swagger 2.0: ``swagger_to_openapi3`` turns the
operations we use into OpenAPI 3.0.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from openapi_core import Config, OpenAPI

FOLDER = Path(__file__).parent / "openapi"
# The Schema Registry operations the project uses (its client, provisioning and the emulator).
REGISTRY_PATHS = (
    "/stats",
    "/tenant/fieldgroups",
    "/tenant/fieldgroups/{FIELD_GROUP_ID}",
    "/tenant/schemas",
    "/tenant/schemas/{SCHEMA_ID}",
    "/tenant/descriptors",
)
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


@dataclass(frozen=True)
class Document:
    """One vendor document: which API, under which base path, as openapi-core reads it."""

    name: str
    base_path: str
    spec: dict[str, Any]

    @property
    def api(self) -> OpenAPI:
        return _api(self.name)


@cache
def documents() -> tuple[Document, ...]:
    """Every vendored document, the longest base path first (the one a URL belongs to)."""
    found = [
        _document("batch-ingestion", "aep/batch-ingestion.yaml", "/data/foundation/import"),
        _document("catalog", "aep/catalog.yaml", "/data/foundation/catalog"),
        _document("identity-service", "aep/identity-service.yaml", "/data/core"),
        Document(
            "schema-registry",
            "/data/foundation/schemaregistry",
            _with_server(_registry(), "/data/foundation/schemaregistry"),
        ),
        _document("mixpanel-export", "mixpanel/export.openapi.yaml", "/api/2.0"),
    ]
    return tuple(sorted(found, key=lambda document: -len(document.base_path)))


def _registry() -> dict[str, Any]:
    swagger = _load("aep/schema-registry.yaml")
    # A list's ``_page.next`` "contains null if this is the last or only page" (its own
    # description and examples), yet is typed a plain string: nullable.
    for definition, holder in (("listResponseBasic", "_page"), ("linksBasic", None)):
        node = swagger["definitions"][definition]["properties"]
        node = node[holder]["properties"] if holder else node
        node["next"]["x-nullable"] = True
    # createDescriptor types xdm:sourceVersion as a string, yet its own example and the
    # descriptor lookup give the integer 1, as Adobe's descriptor guide does: an integer.
    swagger["definitions"]["createDescriptor"]["properties"]["xdm:sourceVersion"] = {
        "type": "integer"
    }
    return swagger_to_openapi3(swagger, REGISTRY_PATHS)


def document_for(path: str) -> Document | None:
    """The document describing the API at URL path ``path``, if one is vendored."""
    for document in documents():
        if path == document.base_path or path.startswith(document.base_path + "/"):
            return document
    return None


@cache
def _api(name: str) -> OpenAPI:
    (document,) = [item for item in documents() if item.name == name]
    # Adobe's Catalog document breaks the OpenAPI schema in places that do not concern its
    # operations (a parameter list mixing objects and references the validator rejects):
    # validated for what it says, not for its own form.
    if name == "catalog":
        return OpenAPI.from_dict(document.spec, config=Config(spec_validator_cls=None))
    return OpenAPI.from_dict(document.spec)


def _document(name: str, file: str, base_path: str) -> Document:
    spec = _load(file)
    for erratum in _ERRATA.get(name, ()):
        erratum(spec)
    return Document(name, base_path, _with_server(spec, base_path))


def _batch_statuses(spec: dict[str, Any]) -> None:
    """Batch Ingestion's Batch.status lists 8 statuses, without ``loading``, which every new
    batch has (its own prose; the Catalog document lists all 16): the Catalog's list is used."""
    catalog = _load("aep/catalog.yaml")
    statuses = catalog["components"]["schemas"]["batchResponse"]["properties"]["status"]["enum"]
    spec["components"]["schemas"]["Batch"]["properties"]["status"]["enum"] = statuses


def _input_formats(spec: dict[str, Any]) -> None:
    """IngestBatch spells the formats ``JSON``/``Parquet``/``CSV``; the same document's Batch,
    the Catalog document and Adobe's examples spell them lower case (``json``): both are taken."""
    fields = spec["components"]["schemas"]["IngestBatch"]["properties"]["inputFormat"]
    formats = _properties(spec, fields)["format"]
    formats["enum"] = [*formats["enum"], *(value.lower() for value in formats["enum"])]


def _identity_types(spec: dict[str, Any]) -> None:
    """The identity-type enums mix spellings (``COOKIE``, ``Device``, ``Cross_device``) from one
    schema to the next: every spelling is taken wherever ``idType`` is listed."""
    for node in _nodes(spec):
        kind = node.get("properties", {}).get("idType") if isinstance(node, dict) else None
        if isinstance(kind, dict) and "enum" in kind:
            values = kind["enum"]
            spellings = [*values, *(v.upper() for v in values), *(v.capitalize() for v in values)]
            kind["enum"] = list(dict.fromkeys(spellings))


def _properties(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        node = spec["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node["properties"]


def _nodes(node: Any) -> list[Any]:
    found, stack = [], [node]
    while stack:
        current = stack.pop()
        found.append(current)
        if isinstance(current, dict):
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return found


def _later_statuses(spec: dict[str, Any]) -> None:
    """Adobe's batch references name ``archived`` and ``retained`` among the statuses a finished
    batch can show later; the Catalog's enum lacks them: both are taken."""
    for name in ("batchResponse", "batchRequest", "batchPatchRequest"):
        status = spec["components"]["schemas"][name]["properties"]["status"]
        status["enum"] = [*status["enum"], "archived", "retained"]


# Corrections of plain mistakes in a vendor document, each explained (docs/aep-api.md).
_ERRATA = {
    "catalog": (_later_statuses,),
    "batch-ingestion": (_batch_statuses, _input_formats),
    "identity-service": (_identity_types,),
}


def _load(file: str) -> dict[str, Any]:
    return _without_empty_content(
        _string_keys(yaml.safe_load((FOLDER / file).read_text(encoding="utf-8")))
    )


def _without_empty_content(spec: dict[str, Any]) -> dict[str, Any]:
    """``content: {}`` on a response means "no body" (Adobe writes it so); openapi-core reads it
    as a body of no known type: the empty entries are dropped."""
    for node in _nodes(spec.get("paths", {})):
        if isinstance(node, dict) and node.get("content") == {}:
            del node["content"]
    return spec


def _with_server(spec: dict[str, Any], base_path: str) -> dict[str, Any]:
    return {**spec, "servers": [{"url": base_path}]}


def _string_keys(node: Any) -> Any:
    """YAML reads ``200:`` as an int; OpenAPI keys are strings."""
    if isinstance(node, dict):
        return {str(key): _string_keys(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_string_keys(item) for item in node]
    return node


def swagger_to_openapi3(swagger: dict[str, Any], paths: tuple[str, ...]) -> dict[str, Any]:
    """The ``paths`` of a Swagger 2.0 document as an OpenAPI 3.0 document.

    Body parameters become request bodies for each type the operation ``consumes``, responses
    get a content entry for each type it ``produces``, the other parameters keep their place
    with their type moved into ``schema``, and ``#/definitions`` moves to
    ``#/components/schemas``.
    """
    shared_parameters = swagger.get("parameters", {})
    converted_paths: dict[str, Any] = {}
    for path in paths:
        # ``/tenant/x`` holds some operations and ``/{CONTAINER_ID}/x`` the others (GET):
        # with the container fixed to ``tenant`` both are one path.
        container_path = path.replace("/tenant/", "/{CONTAINER_ID}/", 1)
        converted: dict[str, Any] = {}
        for source in (container_path, path):
            item = swagger["paths"].get(source, {})
            common = item.get("parameters", [])
            for method in _METHODS:
                if method in item:
                    operation = _operation(swagger, item[method], common, shared_parameters)
                    operation["parameters"] = [
                        parameter
                        for parameter in operation["parameters"]
                        if parameter["name"] != "CONTAINER_ID"
                    ]
                    converted[method] = operation
        converted_paths[path] = converted
    return {
        "openapi": "3.0.3",
        "info": swagger["info"],
        "paths": converted_paths,
        "components": {"schemas": _references(swagger.get("definitions", {}))},
    }


def _operation(
    swagger: dict[str, Any],
    operation: dict[str, Any],
    common: list[dict[str, Any]],
    shared_parameters: dict[str, Any],
) -> dict[str, Any]:
    consumes = operation.get("consumes") or swagger.get("consumes") or ["application/json"]
    produces = operation.get("produces") or swagger.get("produces") or ["application/json"]
    converted: dict[str, Any] = {
        key: operation[key] for key in ("operationId", "summary", "tags") if key in operation
    }
    parameters = []
    for parameter in [*common, *operation.get("parameters", [])]:
        if "$ref" in parameter:
            parameter = shared_parameters[parameter["$ref"].rsplit("/", 1)[-1]]
        if parameter["in"] == "body":
            converted["requestBody"] = {
                "required": bool(parameter.get("required")),
                "content": {
                    media_type: {"schema": _references(parameter["schema"])}
                    for media_type in consumes
                },
            }
        elif parameter["in"] != "formData":
            parameters.append(_parameter(parameter))
    converted["parameters"] = parameters
    converted["responses"] = {
        str(status): _response(response, produces)
        for status, response in operation.get("responses", {}).items()
    }
    return converted


def _parameter(parameter: dict[str, Any]) -> dict[str, Any]:
    schema_keys = ("type", "format", "enum", "items", "default", "minimum", "maximum", "pattern")
    return {
        "name": parameter["name"],
        "in": parameter["in"],
        "required": bool(parameter.get("required")) or parameter["in"] == "path",
        "schema": _references({key: parameter[key] for key in schema_keys if key in parameter}),
    }


def _response(response: dict[str, Any], produces: list[str]) -> dict[str, Any]:
    converted: dict[str, Any] = {"description": str(response.get("description", ""))}
    if "schema" in response:
        schema = _references(response["schema"])
        converted["content"] = {media_type: {"schema": schema} for media_type in produces}
    return converted


def _references(node: Any) -> Any:
    """A copy of ``node`` with Swagger's ``#/definitions/X`` as ``#/components/schemas/X``."""
    node = copy.deepcopy(node)
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            reference = current.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/definitions/"):
                current["$ref"] = "#/components/schemas/" + reference.removeprefix("#/definitions/")
            if current.get("x-nullable"):
                current["nullable"] = True
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return node
