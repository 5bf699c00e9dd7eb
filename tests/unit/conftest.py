"""Unit tests never get a rerun: they need no model, so a failure is a bug, never noise.

The suite-wide ``--reruns 1`` (pyproject.toml) is for tests with real models, whose outcome can
depend on what Whisper hears; ``flaky(reruns=0)`` takes it back for everything here.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/unit/" in item.nodeid.replace("\\", "/"):
            item.add_marker(pytest.mark.flaky(reruns=0))
