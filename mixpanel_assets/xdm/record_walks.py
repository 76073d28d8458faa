"""Quick walks over a record: are its fields on a shape, does it hold an empty value."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Paths of fields as nested names; None below a name: the field is checked with its whole schema.
Shape = dict[str, "Shape | None"]


def shape_of(paths: Iterable[tuple[str, ...]]) -> Shape:
    """``paths`` (``("device", "screenHeight")``, ...) as nested names."""
    shape: Shape = {}
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


def within(record: Any, shape: Shape) -> bool:
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


def has_empty_value(value: Any) -> bool:
    """Whether ``value`` holds null or an empty string, list or object anywhere (AEP rejects them).

    Run on every record: a loop over parsed JSON (plain dicts and lists, hence ``type`` rather
    than ``isinstance``).
    """
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
