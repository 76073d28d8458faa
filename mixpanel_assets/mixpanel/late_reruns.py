"""What the late-events sensor remembers of each recent day, and when it may ask again.

Per day: the watermark it asked a re-run for, how many re-runs it asked for, when it may ask
again, and whether it gave up and said so.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

CHECK_NAME = "late_events_reloaded"


@dataclass
class LateRerun:
    """Re-runs requested for a day's late events beyond ``watermark``.

    ``watermark`` is the mark the day was loaded with when the late events were found.
    """

    watermark: int
    requests: int = 1
    not_before: float = 0.0  # epoch seconds before which a failed re-run is not asked again
    reported: bool = False  # the check already says the sensor gave up on the day

    def backoff_seconds(self, base_seconds: float) -> float:
        """The pause after the latest request before a failed re-run is asked again.

        None after the first (the next tick may), then 1, 3, 7... times ``base_seconds``.
        """
        return base_seconds * (2 ** (self.requests - 1) - 1)


def load_cursor(text: str | None) -> dict[str, LateRerun]:
    """The sensor's cursor; a cursor of earlier versions (day: watermark) counts one request."""
    entries: dict[str, LateRerun] = {}
    for key, value in (json.loads(text) if text else {}).items():
        entries[key] = LateRerun(value) if isinstance(value, int) else LateRerun(**value)
    return entries


def dump_cursor(entries: dict[str, LateRerun], keys: list[str]) -> str:
    """The cursor for the days still watched (``keys``)."""
    return json.dumps({key: asdict(entries[key]) for key in keys if key in entries})
