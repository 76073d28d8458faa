"""The property loop of ``map_event``: the plain loop, or a function written per common layout.

Design notes (why and when code is written per layout): docs/mapping.md.
"""

from __future__ import annotations

from typing import Any

from mixpanel_assets.xdm.generated_code import (
    PropertyText,
    Target,
    Writer,
    layout_writer,
    write_properties,
)

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


class PropertyWriters:
    """``write_properties`` for one mapping, written as code per layout once it is common.

    A layout gets its function once it has come ``SIGHTINGS_BEFORE_CODE`` times.
    """

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
        return layout_writer(layout, self._targets, self._property_text)
