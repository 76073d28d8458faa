"""The typed conversions a mapping spec can name: Mixpanel value in, XDM value (or None) out.

A conversion returns None for a value it cannot turn into its XDM type (a 3-letter country code,
a non-numeric screen size, an object where a string belongs); the mapping then keeps that value,
untouched, among the tenant's properties, so nothing is lost. None and empty values come back
as None too: AEP rejects them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import quote

# AEP stores XDM integers as 64-bit longs.
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_INTEGER_TEXT = re.compile(r"-?[0-9]{1,19}")
_NUMBER_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_COUNTRY_CODE = re.compile(r"[A-Za-z]{2}")
# ISO 3166-2: country, hyphen, 1 to 3 letters or digits (US-CA, DE-BY, JP-13).
_SUBDIVISION = re.compile(r"[A-Z]{2}-[A-Z0-9]{1,3}")
# An absolute URL starts with its scheme; Mixpanel's "$direct" referrer does not.
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_LIBRARY_URI_BASE = "https://mixpanel.com/libraries/"


def as_string(value: Any) -> str | None:
    """Strings as they are; numbers (``$browser_version: 135``) as their decimal text."""
    if type(value) is str:
        return value or None
    if type(value) is int or type(value) is float:
        return str(value)
    return None


def as_integer(value: Any) -> int | None:
    """Integers, whole floats (``900.0``) and decimal text (``"1440"``), within a 64-bit long."""
    if type(value) is int:
        number = value
    elif (type(value) is float and value.is_integer()) or (
        type(value) is str and _INTEGER_TEXT.fullmatch(value)
    ):
        number = int(value)
    else:
        return None
    return number if _LONG_MIN <= number <= _LONG_MAX else None


def as_number(value: Any) -> int | float | None:
    """Numbers, and decimal text (``"129.00"``) as a number."""
    if type(value) is int:
        return value if _LONG_MIN <= value <= _LONG_MAX else float(value)
    if type(value) is float:
        return value
    if type(value) is str and _NUMBER_TEXT.fullmatch(value):
        number = float(value)
        return number if number not in (float("inf"), float("-inf")) else None
    return None


def as_boolean(value: Any) -> bool | None:
    """A JSON boolean as it is; None for anything else."""
    return value if type(value) is bool else None


def as_url(value: Any) -> str | None:
    """Absolute URLs only: ``$referrer`` is ``"$direct"`` when there was none, not a URL."""
    return value if type(value) is str and _URL_SCHEME.match(value) else None


def as_country_code(value: Any) -> str | None:
    """ISO 3166-1 alpha-2, upper-cased as XDM requires (Mixpanel sometimes sends ``"in"``)."""
    return value.upper() if type(value) is str and _COUNTRY_CODE.fullmatch(value) else None


def as_subdivision_code(value: Any) -> str | None:
    """ISO 3166-2 codes only: Mixpanel's ``$region`` is usually a name, which stays a property."""
    return value if type(value) is str and _SUBDIVISION.fullmatch(value) else None


def as_library_uri(value: Any) -> str | None:
    """``implementationDetails.name`` is a URI in XDM; Mixpanel's ``mp_lib`` is a bare name."""
    text = as_string(value)
    return _library_uri(text) if text else None


@lru_cache(maxsize=256)  # a project's events come from a handful of libraries
def _library_uri(name: str) -> str:
    return _LIBRARY_URI_BASE + quote(name, safe="")


class Conversion(NamedTuple):
    """A property conversion: the function that types a value, and the JSON type it gives."""

    convert: Callable[[Any], Any]
    json_type: str  # the JSON Schema type of what ``convert`` returns


# The names a mapping file's ``type:`` may use.
CONVERSIONS: dict[str, Conversion] = {
    "string": Conversion(as_string, "string"),
    "integer": Conversion(as_integer, "integer"),
    "number": Conversion(as_number, "number"),
    "boolean": Conversion(as_boolean, "boolean"),
    "url": Conversion(as_url, "string"),
    "country_code": Conversion(as_country_code, "string"),
    "subdivision_code": Conversion(as_subdivision_code, "string"),
    "library_uri": Conversion(as_library_uri, "string"),
}

# Which XDM field types can hold each conversion's output.
COMPATIBLE_FIELD_TYPES: dict[str, frozenset[str]] = {
    "string": frozenset({"string"}),
    "integer": frozenset({"integer", "number"}),
    "number": frozenset({"number"}),
    "boolean": frozenset({"boolean"}),
}
