"""The contract's environment variables, read the way Dagster wants them.

Resources get ``dagster.EnvVar``s, so values resolve at launch and secrets stay hidden in the UI;
an optional variable that is unset falls back to the contract's default. Only what must exist
when the code location loads (the partitions' start date and timezone, hence the event-time
regime) is read eagerly, and a
bad value there fails the load with a message naming the variable.
"""

from __future__ import annotations

import os
from datetime import date
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dagster import EnvVar

from mixpanel_assets.errors import ConfigError
from mixpanel_assets.mixpanel.event_time import EVENT_TIME_REGIMES, export_timezone


def env_or_default(name: str, default: str) -> EnvVar | str:
    """``EnvVar(name)`` when the variable is set, else the contract's default value."""
    return EnvVar(name) if os.environ.get(name) else default


def env_int_or_default(name: str, default: int) -> EnvVar | int:
    """``EnvVar.int(name)`` when the variable is set, else the contract's default value."""
    return EnvVar.int(name) if os.environ.get(name) else default


def require_non_empty(values: dict[str, str]) -> None:
    """Fail naming the first variable that resolved to an empty string."""
    for name, value in values.items():
        if not value.strip():
            raise ConfigError(f"{name} is empty: set it (see .env.example).")


def required_value(name: str, what: str) -> str:
    """The variable ``name``'s value; a ``ConfigError`` saying what to set when empty."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set: set it to {what} (see .env.example).")
    return value


def start_date() -> date:
    """MIXPANEL_START_DATE: the first daily partition."""
    value = required_value("MIXPANEL_START_DATE", "the first day to export, as YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"MIXPANEL_START_DATE={value!r} is not a date: use YYYY-MM-DD, e.g. 2026-01-01."
        ) from None


def project_timezone() -> str:
    """MIXPANEL_PROJECT_TIMEZONE: the IANA zone of the Mixpanel project's settings."""
    return validate_timezone(os.environ.get("MIXPANEL_PROJECT_TIMEZONE") or "UTC")


def event_time() -> str:
    """MIXPANEL_EVENT_TIME: ``utc`` (projects created since 2023) or ``project_local``."""
    return validate_event_time(os.environ.get("MIXPANEL_EVENT_TIME", "").strip() or "utc")


def partitions_timezone() -> str:
    """The zone of the daily partitions: the zone Mixpanel's export days are in.

    UTC for ``utc`` projects whatever MIXPANEL_PROJECT_TIMEZONE says; the project's timezone
    for legacy ``project_local`` ones.
    """
    return export_timezone(event_time(), project_timezone())


def validate_event_time(value: str) -> str:
    """``value`` if it is a ``MIXPANEL_EVENT_TIME`` regime, else a ``ConfigError``."""
    if value not in EVENT_TIME_REGIMES:
        raise ConfigError(
            f"MIXPANEL_EVENT_TIME={value!r} is not valid: use utc (projects created since 2023) "
            "or project_local (older projects that store local wall-clock time)."
        )
    return value


def validate_timezone(name: str) -> str:
    """``name`` if it is an IANA timezone, else a ``ConfigError``."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"MIXPANEL_PROJECT_TIMEZONE={name!r} is not an IANA timezone: use the zone of the "
            "Mixpanel project's settings, e.g. UTC or America/Los_Angeles."
        ) from None
    return name


def int_setting(name: str, default: int, minimum: int, maximum: int, meaning: str) -> int:
    """An optional whole-number variable read when the code location loads."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if not minimum <= number <= maximum:
        raise ConfigError(
            f"{name}={value!r} is not valid: give {meaning} as a whole number from {minimum} "
            f"to {maximum} (default {default})."
        )
    return number
