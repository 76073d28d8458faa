"""The mapping spec: which Mixpanel property goes to which XDM field, as a YAML file.

The default (``default_mapping.yaml``) ships with the package; ``MIXPANEL_ASSETS_MAPPING`` may
point at a user's own, which replaces it whole. A spec is checked against the official schemas
as it loads: every target must be a field of the ExperienceEvent class or of the field groups we
validate against (or a custom field under ``_tenant``) that can hold what its conversion
produces. XDM's content model is open, so without this a typo in a path would validate and send
the value nowhere; here it fails the run at once, naming the file and the key.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Hashable
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from mixpanel_assets.xdm.conversions import COMPATIBLE_FIELD_TYPES, CONVERSIONS
from mixpanel_assets.xdm.schema import (
    FIELD_GROUP_IDS,
    TENANT_PLACEHOLDER,
    CustomField,
    field_schemas,
)

MAPPING_VARIABLE = "MIXPANEL_ASSETS_MAPPING"
DEFAULT_MAPPING_FILE = Path(__file__).with_name("default_mapping.yaml")

TENANT_OBJECT = f"_{TENANT_PLACEHOLDER}"
# Fields the mapping fills itself; no property may be mapped onto (or into) them.
RESERVED_PATHS = frozenset(
    {
        ("_id",),
        ("timestamp",),
        ("eventType",),
        ("identityMap",),
        ("environment", "type"),
        (TENANT_OBJECT, "mixpanel", "eventName"),
        (TENANT_OBJECT, "mixpanel", "time"),
        (TENANT_OBJECT, "mixpanel", "properties"),
    }
)
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SCALAR_TYPES = frozenset({"string", "integer", "number", "boolean"})


class MappingFileError(ValueError):
    """The mapping file is missing or malformed.

    The message names the variable, the file, the key and the fix. (The resource turns it into
    the project's ConfigError.)
    """


NonEmpty = Annotated[str, StringConstraints(min_length=1)]
NamespaceCode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IdentityNamespaces(_Strict):
    """AEP identity namespace codes for Mixpanel's three ids (the namespaces must exist in AEP)."""

    distinct_id: NamespaceCode
    user_id: NamespaceCode
    device_id: NamespaceCode

    @model_validator(mode="after")
    def _one_value_per_namespace(self) -> IdentityNamespaces:
        if len({self.distinct_id, self.user_id, self.device_id}) < 3:
            raise ValueError(
                "distinct_id, user_id and device_id need three different namespaces: AEP "
                "rejects an event with two values in one namespace"
            )
        return self


class EventTypes(_Strict):
    """``eventType`` by Mixpanel event name, and the one for every other event."""

    default: NonEmpty
    by_event: dict[NonEmpty, NonEmpty]


class PropertyMapping(_Strict):
    """One Mixpanel property: the XDM field it fills and the conversion that types its value."""

    xdm: str = Field(description="dotted AEP path; _tenant is the tenant object _<AEP_TENANT_ID>")
    type: str = Field(default="string", description="a conversion, see conversions.CONVERSIONS")

    @property
    def path(self) -> tuple[str, ...]:
        """The XDM field's path, one name per level."""
        return tuple(self.xdm.split("."))

    @field_validator("type")
    @classmethod
    def _known_conversion(cls, value: str) -> str:
        if value not in CONVERSIONS:
            raise ValueError(f"{value!r} is not a conversion; use one of {', '.join(CONVERSIONS)}")
        return value

    @field_validator("xdm")
    @classmethod
    def _well_formed_path(cls, value: str) -> str:
        path = tuple(value.split("."))
        if not all(_FIELD_NAME.fullmatch(name) for name in path):
            raise ValueError(
                f"{value!r} is not an XDM path: dot-separated field names in AEP notation, "
                "e.g. web.webPageDetails.URL or _tenant.mixpanel.plan"
            )
        if any(path[: len(reserved)] == reserved for reserved in RESERVED_PATHS):
            raise ValueError(
                f"{value!r} is filled by the mapping itself; map the property elsewhere"
            )
        return value

    @model_validator(mode="after")
    def _target_exists_and_fits(self) -> PropertyMapping:
        problem = _target_problem(self.path, CONVERSIONS[self.type].json_type)
        if problem:
            raise ValueError(f"xdm {self.xdm!r} {problem}")
        return self


class MappingRules(_Strict):
    """The content of a mapping file."""

    identity_namespaces: IdentityNamespaces
    event_types: EventTypes
    properties: dict[str, PropertyMapping]
    # environment.type is "application" for events these mp_lib SDKs send, "browser" for events
    # that carry $browser, and left out otherwise.
    application_libraries: tuple[NonEmpty, ...]
    # The quarantine_share check fails a day whose quarantined share of raw lines exceeds this.
    max_quarantined_share: float = Field(ge=0, le=1)

    @field_validator("properties")
    @classmethod
    def _one_field_per_property(
        cls, value: dict[str, PropertyMapping]
    ) -> dict[str, PropertyMapping]:
        if "time" in value:
            raise ValueError("'time' becomes timestamp and _tenant.mixpanel.time; remove it")
        claimed: dict[tuple[str, ...], str] = {}
        for name, mapping in sorted(value.items(), key=lambda item: item[1].path):
            for length in range(1, len(mapping.path) + 1):
                owner = claimed.get(mapping.path[:length])
                if owner is not None:
                    raise ValueError(
                        f"properties {owner!r} and {name!r} both map to {mapping.xdm!r} (or one "
                        "inside the other); give each property its own field"
                    )
            claimed[mapping.path] = name
        return value

    def custom_tenant_fields(self) -> tuple[CustomField, ...]:
        """Typed fields under ``_tenant`` that the shipped tenant field group lacks."""
        return tuple(
            (mapping.path[1:], CONVERSIONS[mapping.type].json_type)
            for mapping in self.properties.values()
            if mapping.path[0] == TENANT_OBJECT and not field_schemas(mapping.path)
        )


def _target_problem(path: tuple[str, ...], json_type: str) -> str:
    """Why a value of ``json_type`` cannot go to ``path`` ('' when it can)."""
    nodes = field_schemas(path)
    if not nodes:
        if path[0] != TENANT_OBJECT:
            groups = ", ".join(group.rsplit("/", 1)[1] for group in FIELD_GROUP_IDS)
            return (
                "is not a field of the XDM ExperienceEvent class or of its field groups "
                f"({groups}); check the spelling, or map the property under _tenant (your "
                "tenant object, whatever AEP_TENANT_ID is) to keep it as a typed custom field"
            )
        return _custom_tenant_problem(path)
    types = {node["type"] for node in nodes if "type" in node}
    if types - _SCALAR_TYPES:
        children = sorted({name for node in nodes for name in node.get("properties", {})})
        inside = f"; map to one of its fields: {', '.join(children)}" if children else ""
        return f"is {'/'.join(sorted(types))}, not a single value{inside}"
    if not types <= COMPATIBLE_FIELD_TYPES[json_type]:
        fitting = [
            name
            for name, conversion in CONVERSIONS.items()
            if types <= COMPATIBLE_FIELD_TYPES[conversion.json_type]
        ]
        return (
            f"holds {'/'.join(sorted(types))} but this conversion gives {json_type}; "
            f"use type: {' or '.join(fitting)}"
        )
    return ""


def _custom_tenant_problem(path: tuple[str, ...]) -> str:
    if len(path) < 2:
        return "is the tenant object itself; name a field inside it, e.g. _tenant.mixpanel.plan"
    for length in range(2, len(path)):
        for node in field_schemas(path[:length]):
            if node.get("type") != "object" or "additionalProperties" in node:
                return f"lies inside {'.'.join(path[:length])}, which is not an object of fields"
    return ""


def load_rules(file: str = "") -> MappingRules:
    """The rules in ``file`` (the value of MIXPANEL_ASSETS_MAPPING), or the default rules."""
    path = Path(file).expanduser().resolve() if file else DEFAULT_MAPPING_FILE
    source = f"{MAPPING_VARIABLE}={file}" if file else f"the default mapping {path}"
    try:
        stat = os.stat(path)
    except OSError as problem:
        raise MappingFileError(
            f"{source}: cannot read the file ({problem.strerror}); point {MAPPING_VARIABLE} at a "
            "mapping YAML file, or unset it to use the default mapping."
        ) from None
    return _load_rules(path, source, stat.st_mtime_ns, stat.st_size)


def default_rules() -> MappingRules:
    """The rules of the default mapping file."""
    return load_rules()


@lru_cache(maxsize=16)
def _load_rules(path: Path, source: str, mtime_ns: int, size: int) -> MappingRules:
    """Parsed and checked once per file version (mtime and size are part of the cache key)."""
    hint = (
        f"Fix the file ({DEFAULT_MAPPING_FILE} shows every key), or unset {MAPPING_VARIABLE} to "
        "use the default mapping."
    )
    try:
        content = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
    except (OSError, UnicodeDecodeError) as problem:
        raise MappingFileError(f"{source}: cannot read the file ({problem}). {hint}") from None
    except yaml.YAMLError as problem:
        raise MappingFileError(
            f"{source}: not valid YAML: {_yaml_problem(problem)}. {hint}"
        ) from None
    if not isinstance(content, dict):
        raise MappingFileError(f"{source}: the file must hold a YAML mapping of keys. {hint}")
    try:
        return MappingRules.model_validate(content)
    except ValidationError as problem:
        details = "; ".join(_describe(error) for error in problem.errors())
        raise MappingFileError(f"{source}: {details}. {hint}") from None


def _describe(error: Any) -> str:
    location = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    return f"{location}: {message}"


def _yaml_problem(problem: yaml.YAMLError) -> str:
    mark = getattr(problem, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + str(getattr(problem, "problem", None) or problem)


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice (plain ``safe_load`` keeps the last silently)."""


def _mapping_without_repeats(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, Hashable) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} appears twice", key_node.start_mark
            )
        if isinstance(key, Hashable):
            seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_repeats
)


def main(arguments: list[str] | None = None) -> int:
    """``python -m mixpanel_assets.xdm.spec [FILE]``: check a mapping file before deploying it."""
    parser = argparse.ArgumentParser(
        prog="python -m mixpanel_assets.xdm.spec",
        description="Check a Mixpanel -> XDM mapping file; without FILE, the default mapping.",
    )
    parser.add_argument("file", nargs="?", default="", help="a mapping YAML file")
    file = parser.parse_args(arguments).file
    try:
        rules = load_rules(file)
    except MappingFileError as problem:
        print(problem, file=sys.stderr)
        return 1
    custom = [".".join((TENANT_OBJECT, *path)) for path, _ in rules.custom_tenant_fields()]
    print(f"{file or DEFAULT_MAPPING_FILE}: valid")
    print(f"  {len(rules.properties)} properties mapped to XDM fields")
    print(f"  {len(rules.event_types.by_event)} event names with their own eventType")
    print(f"  max_quarantined_share {rules.max_quarantined_share}")
    if custom:
        print(f"  custom fields to add to your tenant field group in AEP: {', '.join(custom)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
