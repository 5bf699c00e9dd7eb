"""A tool module for the tool-calling tests (``tools.modules = ["tests.helpers.door_tools"]``):
a fact no model can know."""

from __future__ import annotations

import voice_agent

DOOR_CODE = "4 7 1 9"


@voice_agent.tool
def door_code() -> str:
    """Return today's code for the office door."""
    return DOOR_CODE
