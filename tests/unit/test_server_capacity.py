"""Admission control: the load a balancer reads and the refusal a session beyond capacity gets."""

from __future__ import annotations

import pytest

from voice_agent.core.config import V3Config
from voice_agent.server.capacity import (BUSY_RETRY_AFTER_S, busy_error, loading_error,
                                         server_load)
from voice_agent.server.sessions import ServerBusyError, SessionManager


@pytest.mark.parametrize(("active", "capacity", "load"), [
    (0, 4, 0.0), (1, 4, 0.25), (2, 4, 0.5), (3, 4, 0.75), (4, 4, 1.0),
    (1, 3, 0.333), (2, 3, 0.667), (5, 4, 1.0),  # never above 1, even if the capacity was lowered
])
def test_load_is_open_sessions_over_capacity(active: int, capacity: int, load: float) -> None:
    assert server_load(active, capacity) == load


def test_a_server_not_accepting_sessions_is_full() -> None:
    # Models loading (or failed): a balancer must send nobody there, whatever is open.
    assert server_load(0, 4, accepting=False) == 1.0
    assert server_load(0, 0) == 1.0


async def test_manager_load_follows_sessions_and_the_next_one_is_refused() -> None:
    mgr = SessionManager(max_sessions=2, idle_timeout_s=60, max_session_s=60)
    assert mgr.load == 0.0
    a = mgr.create()
    assert mgr.load == 0.5
    mgr.create()
    assert mgr.load == 1.0
    with pytest.raises(ServerBusyError) as refused:
        mgr.create()
    assert (refused.value.code, refused.value.capacity, refused.value.active) == ("busy", 2, 2)
    assert len(mgr) == 2  # the refused one took no slot
    await mgr.close(a.id)
    assert mgr.load == 0.5
    await mgr.close_all()
    assert mgr.load == 0.0


def test_busy_refusal_wire_format() -> None:
    msg = busy_error(capacity=2, active=2)
    assert msg == {"type": "error", "code": "busy", "fatal": True, "message": msg["message"],
                   "retry_after_s": BUSY_RETRY_AFTER_S, "capacity": 2, "active_sessions": 2}
    assert "busy" in msg["message"] and "2" in msg["message"]
    loading = loading_error()
    assert (loading["code"], loading["fatal"], loading["message"]) == (
        "server_busy", True, "models are still loading")
    assert loading["retry_after_s"] > 0


def test_default_capacity_is_the_measured_one() -> None:
    assert V3Config().server.max_sessions == 4
