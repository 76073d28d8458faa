"""The property loop of ``map_event``: each mapped property into its XDM field, the rest kept.

``write_properties`` is the loop itself: a target lookup, a tuple unpack and calls for every
property of every event. Yet a day's events come in few layouts (the same property names in the
same order: an SDK sends the same properties every time), so ``PropertyWriters`` writes, for
each layout seen ``SIGHTINGS_BEFORE_CODE`` times, a Python function with the loop unrolled:
every property's target, parent object and conversion are resolved when the function is
written, and only the values are looked at per event. That saves about 30,000 instructions per
event (callgrind, the benchmark's events) for about 15 million to write the function. Its
results are exactly the loop's (same fields, same key order, same errors; a property test holds
them to it); rare layouts, and layouts past ``MAX_LAYOUTS``, take the loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mixpanel_assets.xdm.conversions import as_string

# (parent path, its number, field name, conversion, value check or None) for one mapped
# property: the number finds the parent object again once a sibling field has made it.
Target = tuple[tuple[str, ...], int, str, Callable[[Any], Any], Callable[[Any], bool] | None]
# A property value that is not a string, as the text kept among the tenant's properties
# (called with the value and the property's name, for the error message).
PropertyText = Callable[[Any, str], str]
# Writes an event's mapped properties into the record; returns the others, as text.
Writer = Callable[[dict[str, Any], dict[str, Any]], dict[str, str]]

_EMPTY_CONTAINERS = (str, list, dict)
# Layouts a mapping writes code for (the rest take the loop): each function takes about 18 KB
# for 28 properties, so this bounds a process's share at about 20 MB, however varied the day's
# property names (the benchmark's day has 508 layouts).
MAX_LAYOUTS = 1024
# Layouts with more properties than this take the loop (one function per layout stays small).
MAX_LAYOUT_PROPERTIES = 256
# Sightings of a layout before its code is written: writing it costs about as much CPU as
# 500 events save by it (callgrind: 15M instructions, against 30,000 saved per event), so a
# rare layout keeps the loop.
SIGHTINGS_BEFORE_CODE = 512
# Layouts still taking the loop, with their sightings; forgotten in bulk past this many.
_MAX_COUNTED = 1 << 16


def write_properties(
    properties: dict[str, Any],
    record: dict[str, Any],
    targets: dict[str, Target],
    parent_paths: int,
    property_text: PropertyText,
) -> dict[str, str]:
    """Each mapped property that converts into its field of ``record`` (its parent objects made
    when first needed); every other one, but ``time`` and empty values, returned as text."""
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


class PropertyWriters:
    """``write_properties`` for one mapping, through a function written per layout once the
    layout has come ``SIGHTINGS_BEFORE_CODE`` times."""

    def __init__(
        self, targets: dict[str, Target], parent_paths: int, property_text: PropertyText
    ) -> None:
        self._targets = targets
        self._parent_paths = parent_paths
        self._property_text = property_text
        # The written functions by layout: what ``map_event`` looks up first.
        self.by_layout: dict[tuple[str, ...], Writer] = {}
        self._sightings: dict[tuple[str, ...], int] = {}

    def write(self, properties: dict[str, Any], record: dict[str, Any]) -> dict[str, str]:
        """For an event whose layout has no function (yet): the loop, or a new function."""
        layout = tuple(properties)
        sightings = self._sightings.get(layout, 0) + 1
        if (
            sightings >= SIGHTINGS_BEFORE_CODE
            and len(self.by_layout) < MAX_LAYOUTS
            and len(layout) <= MAX_LAYOUT_PROPERTIES
        ):
            del self._sightings[layout]
            writer = self.by_layout[layout] = self.writer_for(layout)
            return writer(properties, record)
        if len(self._sightings) >= _MAX_COUNTED:
            self._sightings.clear()
        self._sightings[layout] = sightings
        return write_properties(
            properties, record, self._targets, self._parent_paths, self._property_text
        )

    def writer_for(self, layout: tuple[str, ...]) -> Writer:
        """The function for events whose properties are ``layout``, in that order."""
        names: dict[str, Any] = {"EMPTY": _EMPTY_CONTAINERS, "property_text": self._property_text}
        lines = ["def write(properties, record):", "    custom = {}"]
        if layout:
            values = ", ".join(f"v{index}" for index in range(len(layout)))
            lines.append(f"    {values}, = properties.values()")
        parents_made: set[int] = set()
        for index, key in enumerate(layout):
            value, convert = f"v{index}", f"convert{index}"
            target = self._targets.get(key)
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
