"""The package's only generated code (``exec``), each generated function beside its plain twin.

Two hot paths of the mapping run as Python written for the case at hand; the plain functions
give the same results and tests hold them equal (design notes: docs/mapping.md).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import cache
from typing import Any

import fastjsonschema

from mixpanel_assets.xdm.conversions import as_string
from mixpanel_assets.xdm.record_walks import Shape, has_empty_value, within

# -- the property loop of ``map_event`` ----------------------------------------------------------

# (parent path, its number, field name, conversion, value check or None) for one mapped
# property: the number finds the parent object again once a sibling field has made it.
Target = tuple[tuple[str, ...], int, str, Callable[[Any], Any], Callable[[Any], bool] | None]
# A property value that is not a string, as the text kept among the tenant's properties
# (called with the value and the property's name, for the error message).
PropertyText = Callable[[Any, str], str]
# Writes an event's mapped properties into the record; returns the others, as text.
Writer = Callable[[dict[str, Any], dict[str, Any]], dict[str, str]]

_EMPTY_CONTAINERS = (str, list, dict)


def write_properties(
    properties: dict[str, Any],
    record: dict[str, Any],
    targets: dict[str, Target],
    parent_paths: int,
    property_text: PropertyText,
) -> dict[str, str]:
    """Plain: each mapped property that converts into its field of ``record``; the rest as text.

    Parent objects are made when first needed; ``time`` and empty values are not kept.
    """
    custom: dict[str, str] = {}
    parent_nodes: list[dict[str, Any] | None] = [None] * parent_paths
    for key, value in properties.items():
        target = targets.get(key)
        if target is not None:
            parents, number, field, convert, fits = target
            converted = convert(value)
            if converted is not None and (fits is None or fits(converted)):
                node = parent_nodes[number]
                if node is None:  # made (or found) once per record, when first needed
                    node = record
                    for parent in parents:
                        child = node.get(parent)
                        node = child if child is not None else node.setdefault(parent, {})
                    parent_nodes[number] = node
                node[field] = converted
                continue
        elif key == "time":
            continue
        if value is None or (not value and isinstance(value, _EMPTY_CONTAINERS)):
            continue
        custom[key] = value if type(value) is str else property_text(value, key)
    return custom


def layout_writer(
    layout: tuple[str, ...], targets: dict[str, Target], property_text: PropertyText
) -> Writer:
    """Generated: ``write_properties`` unrolled for events whose properties are ``layout``."""
    names: dict[str, Any] = {"EMPTY": _EMPTY_CONTAINERS, "property_text": property_text}
    lines = ["def write(properties, record):", "    custom = {}"]
    if layout:
        values = ", ".join(f"v{index}" for index in range(len(layout)))
        lines.append(f"    {values}, = properties.values()")
    parents_made: set[int] = set()
    for index, key in enumerate(layout):
        value, convert = f"v{index}", f"convert{index}"
        target = targets.get(key)
        kept = f"{value} is not None and ({value} or not isinstance({value}, EMPTY))"
        keep = (
            f"custom[{key!r}] = {value} if type({value}) is str "
            f"else property_text({value}, {key!r})"
        )
        if target is None:
            if key != "time":
                lines.append(f"    if {kept}: {keep}")
            continue
        parents, number, field, conversion, fits = target
        names[convert] = conversion
        if conversion is as_string:  # most targets: strings pass as they are, if not empty
            strings = f"({value} or None) if type({value}) is str"
            lines.append(f"    c = {strings} else {convert}({value})")
        else:
            lines.append(f"    c = {convert}({value})")
        if fits is None:
            lines.append("    if c is not None:")
        else:
            names[f"fits{index}"] = fits
            lines.append(f"    if c is not None and fits{index}(c):")
        parent = f"n{number}"
        if number not in parents_made:
            parents_made.add(number)
            lines.insert(2, f"    {parent} = None")
        lines.append(f"        if {parent} is None:")
        lines.extend(f"            {line}" for line in _parent_walk(parent, parents))
        lines.append(f"        {parent}[{field!r}] = c")
        lines.append(f"    elif {kept}: {keep}")
    lines.append("    return custom")
    exec("\n".join(lines), names)  # source built from the layout's names, as literals
    return names["write"]


def _parent_walk(node: str, parents: tuple[str, ...]) -> list[str]:
    """Lines that set ``node`` to the object at ``parents`` in ``record``, as the loop does."""
    lines = [f"{node} = record"]
    for parent in parents:
        # the loop's walk: get, or setdefault when that gives None (or {}, which it returns)
        lines.append(f"{node} = {node}.get({parent!r}) or {node}.setdefault({parent!r}, {{}})")
    return lines


# -- a cut schema's verdict on a record ----------------------------------------------------------

# A check's answer: True (valid), False (invalid) or None (a field off the shape).
Check = Callable[[Any], bool | None]
# The tests of the ``format`` names a schema may use.
Formats = Mapping[str, Callable[[object], bool]]

# fastjsonschema's draft-6 type tests, as source and as functions, for single-type nodes.
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
_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list | tuple),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, int | float | Decimal) and not isinstance(v, bool),
    "integer": lambda v: (
        (isinstance(v, int) or (isinstance(v, float) and v.is_integer()))
        and not isinstance(v, bool)
    ),
}
# Keywords turned into inline tests; a node with any other is handed to fastjsonschema.
_INLINE_KEYWORDS = frozenset(
    {"type", "properties", "required", "additionalProperties", "items", "format", "enum"}
    | {"pattern", "default"}  # a field's default is its parent's to write
)
_OBJECT_KEYWORDS = frozenset({"properties", "required", "additionalProperties"})
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")
_MISSING = object()


def _inline(schema: dict[str, Any], shape: Shape | None, formats: Formats) -> bool:
    """Whether both checks test ``schema`` inline (else fastjsonschema judges the node)."""
    kind = schema.get("type")
    return bool(
        schema.keys() <= _INLINE_KEYWORDS
        and _TYPE_TESTS.get(str(kind))
        and (shape is None or kind == "object")
        and ("format" not in schema or schema["format"] in formats)
        and ({"format", "enum", "pattern"}.isdisjoint(schema) or kind == "string")
        and (_OBJECT_KEYWORDS.isdisjoint(schema) or kind == "object")
        and ("items" not in schema or kind == "array")
        and all(isinstance(value, str) for value in schema.get("enum", ()))
        and schema.get("additionalProperties", False) is not True
        and isinstance(schema.get("items", {}), dict)
    )


@cache
def _pattern_search(pattern: str) -> Callable[[str], re.Match[str] | None]:
    """``pattern`` as fastjsonschema reads it: searched, any unescaped ``$`` the very end."""
    return re.compile(_UNESCAPED_DOLLAR.sub(r"\\Z", pattern)).search


def written_check(
    schema: dict[str, Any],
    shape: Shape | None,
    formats: Formats,
    *,
    reject_empty_values: bool = False,
) -> Check:
    """Generated: the verdict of a cut schema (``schema_cut``) on a record, as one function.

    True: valid; False: invalid; None: a field off ``shape`` (the cut schema cannot judge).
    With ``reject_empty_values``, a null or empty value anywhere also answers False.
    """
    return _CheckWriter(formats, reject_empty_values).function(schema, shape)


def interpreted_check(
    schema: dict[str, Any],
    shape: Shape | None,
    formats: Formats,
    *,
    reject_empty_values: bool = False,
) -> Check:
    """Plain: ``written_check``'s verdicts (and default values written), by walking ``schema``."""
    handed_over: dict[int, Callable[[Any], Any]] = {}

    def fastjsonschema_verdict(node: dict[str, Any], value: Any) -> bool:
        if id(node) not in handed_over:
            handed_over[id(node)] = fastjsonschema.compile(node, formats=dict(formats))
        try:
            handed_over[id(node)](value)
        except fastjsonschema.JsonSchemaValueException:
            return False
        return True

    def judge(node: dict[str, Any], node_shape: Shape | None, value: Any) -> bool | None:
        if not _inline(node, node_shape, formats):
            if node_shape is not None and not within(value, node_shape):
                return None
            if reject_empty_values and has_empty_value(value):
                return False
            return fastjsonschema_verdict(node, value)
        kind = node["type"]
        if not _TYPE_CHECKS[kind](value):
            return False
        if reject_empty_values and kind in ("string", "object", "array") and not value:
            return False
        if "format" in node and not formats[node["format"]](value):
            return False
        if "enum" in node and value not in node["enum"]:
            return False
        if "pattern" in node and not _pattern_search(node["pattern"])(value):
            return False
        if node_shape is not None and not value.keys() <= node_shape.keys():
            return None
        if any(name not in value for name in node.get("required", ())):
            return False
        properties = node.get("properties", {})
        for name, child in properties.items():
            child_value = value.get(name, _MISSING)
            if child_value is not _MISSING:
                child_shape = None if node_shape is None else node_shape[name]
                verdict = judge(child, child_shape, child_value)
                if verdict is not True:
                    return verdict
            elif "default" in child:
                value[name] = copy.deepcopy(child["default"])
        open_object = kind == "object" and "additionalProperties" not in node
        if (  # names off the schema
            reject_empty_values
            and open_object
            and node_shape is None
            and any(
                key not in properties and has_empty_value(child_value)
                for key, child_value in value.items()
            )
        ):
            return False
        if "additionalProperties" in node:
            extra = node["additionalProperties"]
            for key, child_value in value.items():
                if key in properties:
                    continue
                verdict = False if extra is False else judge(extra, None, child_value)
                if verdict is not True:
                    return verdict
        for item in value if "items" in node else ():
            verdict = judge(node["items"], None, item)
            if verdict is not True:
                return verdict
        return True

    return lambda record: judge(schema, shape, record)


class _CheckWriter:
    """Writes ``written_check``'s function, a line per test, nested as the schema is.

    Inline nodes follow fastjsonschema's semantics (its draft-6 type tests; ``format``,
    ``enum`` and ``pattern`` only on strings; ``additionalProperties`` a schema or false;
    ``items`` one schema; a missing field's ``default`` written into the record); any other node
    is checked by fastjsonschema, compiled for it alone, once its fields are found on the shape.
    """

    def __init__(self, formats: Formats, reject_empty_values: bool) -> None:
        self._formats = formats
        self._reject_empty_values = reject_empty_values
        self._lines = ["def check(record):"]
        self._names: dict[str, Any] = {
            "MISSING": _MISSING,
            "Invalid": fastjsonschema.JsonSchemaValueException,
            "Decimal": Decimal,
            "within": within,
            "has_empty_value": has_empty_value,
        }

    def function(self, schema: dict[str, Any], shape: Shape | None) -> Check:
        """The check's function, written and compiled."""
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

    def _node(self, schema: dict[str, Any], shape: Shape | None, var: str, depth: int) -> None:
        if not _inline(schema, shape, self._formats):
            self._handed_over(schema, shape, var, depth)
            return
        kind = schema["type"]
        self._add(depth, f"if not ({_TYPE_TESTS[kind].format(var)}): return False")
        if self._reject_empty_values and kind in ("string", "object", "array"):
            self._add(depth, f"if not {var}: return False")
        if "format" in schema:
            test = self._name(self._formats[schema["format"]])
            self._add(depth, f"if not {test}({var}): return False")
        if "enum" in schema:
            self._add(
                depth, f"if {var} not in {self._name(frozenset(schema['enum']))}: return False"
            )
        if "pattern" in schema:
            search = self._name(_pattern_search(schema["pattern"]))
            self._add(depth, f"if not {search}({var}): return False")
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
        self, schema: dict[str, Any], shape: Shape | None, var: str, depth: int
    ) -> None:
        if shape is not None:
            self._add(depth, f"if not within({var}, {self._name(shape)}): return None")
        if self._reject_empty_values:
            self._add(depth, f"if has_empty_value({var}): return False")
        validate = self._name(fastjsonschema.compile(schema, formats=dict(self._formats)))
        self._add(depth, "try:")
        self._add(depth + 1, f"{validate}({var})")
        self._add(depth, "except Invalid:")
        self._add(depth + 1, "return False")
