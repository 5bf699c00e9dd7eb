"""The built-in tools (``tools.builtin``): the current time and date, which a model cannot know."""

from __future__ import annotations

import datetime as _dt

from .registry import tool


def _now() -> _dt.datetime:
    return _dt.datetime.now().astimezone()


@tool
def current_time() -> str:
    """The current local time (hours and minutes) and time zone."""
    now = _now()
    return f"{now:%H:%M} ({now.tzname() or 'local time'})"


@tool
def current_date() -> str:
    """Today's date and day of the week."""
    return f"{_now():%A, %B} {_now().day}, {_now():%Y}"
