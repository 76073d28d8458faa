"""The errors the AEP client raises."""

from __future__ import annotations


class AEPError(RuntimeError):
    """AEP refused or failed a request; the message says which call, why, and what to do."""


class AEPRefusal(AEPError):
    """AEP answered a request with a 4xx status; ``status`` says which."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class BatchTimeoutError(AEPError):
    """A batch did not reach a terminal status in time."""
