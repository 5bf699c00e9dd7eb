"""Admission control: how full the server is (``load``) and the refusal a session gets when full.

The capacity is ``server.max_sessions``: sessions open at once. ``load`` is what /v3/health
reports for a load balancer, as a LiveKit worker reports its load to the dispatcher: 0 is idle,
1 is full (the next session is refused with ``busy``).

Why sessions and not CPU: one session's turn alone keeps both cores of the reference machine busy
for a second or two (Whisper, then llama.cpp, then Piper), so CPU use says "full" with a single
session and "empty" between turns of four; it tells a balancer nothing about room for one more
conversation. Open sessions against a measured capacity do, and they change only when a session
starts or ends, so the figure a balancer reads is the one admission uses.
"""

from __future__ import annotations

from typing import Any

from ..transport import protocol

BUSY_RETRY_AFTER_S = 10.0
"""Hint sent with ``busy``: seconds before a retry is worth making. Sessions last minutes, so a
slot rarely frees sooner; a page that retries at once would only be refused again."""
LOADING_RETRY_AFTER_S = 5.0
"""Hint sent with ``server_busy`` while the models load (about 6-7 s on the reference machine)."""


def server_load(active: int, capacity: int, *, accepting: bool = True) -> float:
    """0..1: open sessions over the capacity, rounded to 3 places; 1 when not accepting sessions
    at all (models still loading or failed), so that a balancer sends nobody there."""
    if not accepting or capacity <= 0:
        return 1.0
    return round(min(1.0, max(0.0, active / capacity)), 3)


def busy_error(capacity: int, active: int) -> dict[str, Any]:
    """The fatal ``busy`` refusal (then close 1013): the capacity is taken."""
    message = (f"the server is busy: all {capacity} conversation slots are taken; "
               f"try again in {BUSY_RETRY_AFTER_S:g} s")
    return {**protocol.error(protocol.ErrorCode.BUSY, message, fatal=True),
            "retry_after_s": BUSY_RETRY_AFTER_S, "capacity": capacity,
            "active_sessions": active}


def loading_error() -> dict[str, Any]:
    """The fatal ``server_busy`` refusal (then close 1013) while the models are still loading."""
    return {**protocol.error(protocol.ErrorCode.SERVER_BUSY, "models are still loading",
                             fatal=True),
            "retry_after_s": LOADING_RETRY_AFTER_S}
