"""Pytest plugin: every test's HTTP exchanges are checked against the vendors' documents.

Loaded from ``tests/conftest.py``. A test fails when a request our clients sent, or an answer a
local emulator gave, breaks the vendor's OpenAPI document (see ``recorder``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.contract.recorder import ContractRecorder


@pytest.fixture(autouse=True)
def contract_recorder() -> Iterator[ContractRecorder]:
    recorder = ContractRecorder()
    recorder.install()
    try:
        yield recorder
    finally:
        recorder.uninstall()
    problems = recorder.problems
    if problems:
        pytest.fail(
            "HTTP exchanges break the vendors' API documents (tests/contract/openapi):\n"
            + "\n".join(f"- {problem}" for problem in problems[:20]),
            pytrace=False,
        )
