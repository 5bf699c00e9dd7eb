"""Session limits, the reaper, and release of every part on close."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from voice_agent.core.events import ErrorEvent, StatusEvent, TranscriptEvent
from voice_agent.core.status import ConnectionStatus, ProcessingStatus
from voice_agent.server.sessions import CLOSE_IDLE, ServerBusyError, SessionManager


class Part:
    """Stands in for a pipeline or a transport: records that it was closed."""

    def __init__(self) -> None:
        self.closed = 0
        self.in_turn = False

    async def close(self) -> None:
        self.closed += 1

    async def stats(self) -> dict[str, Any]:
        return {}


async def test_limit_and_close_release_everything() -> None:
    mgr = SessionManager(max_sessions=2, idle_timeout_s=60, max_session_s=60)
    a, b = mgr.create(), mgr.create()
    with pytest.raises(ServerBusyError):
        mgr.create()
    pipeline, transport = Part(), Part()
    a.pipeline, a.transport = pipeline, transport
    closed_with: list[tuple[int, str]] = []

    async def closer(code: int, reason: str) -> None:
        closed_with.append((code, reason))

    a.closer = closer
    task = a.spawn(asyncio.sleep(100), "sleeper")
    await mgr.close(a.id, 1000, "bye")
    await mgr.close(a.id)  # idempotent
    assert task.cancelled() and pipeline.closed == 1 and transport.closed == 1
    assert closed_with == [(1000, "bye")]
    assert mgr.get(a.id) is None and len(mgr) == 1
    mgr.create()  # room again
    await mgr.close_all()
    assert len(mgr) == 0 and b.closed.is_set()


async def test_reaper_closes_idle_and_over_long_sessions() -> None:
    mgr = SessionManager(max_sessions=5, idle_timeout_s=0.2, max_session_s=0.5)
    mgr.start()
    idle = mgr.create()
    busy = mgr.create()
    sent: list[dict[str, Any]] = []
    idle.senders.append(sent.append)
    codes: list[int] = []

    async def closer(code: int, reason: str) -> None:
        codes.append(code)

    idle.closer = closer
    for _ in range(6):  # keep one active for longer than the idle timeout
        await asyncio.sleep(0.1)
        busy.info.touch()
    assert idle.closed.is_set() and codes == [CLOSE_IDLE]
    assert sent[-1]["type"] == "error" and sent[-1]["code"] == "session_timeout"
    assert sent[-1]["fatal"] is True
    assert not busy.closed.is_set() or busy.info.duration_s > 0.5
    await asyncio.sleep(0.5)
    assert busy.closed.is_set()  # over max_session_s though active
    assert len(mgr) == 0
    await mgr.stop()


async def test_only_the_conversation_keeps_a_session_from_the_reaper() -> None:
    """Pings and media no longer count; events (speech, text, replies) and a turn under way do,
    however long since the last event."""
    mgr = SessionManager(max_sessions=5, idle_timeout_s=0.4, max_session_s=60)
    mgr.start()
    talking, replying, idle = mgr.create(), mgr.create(), mgr.create()
    for s in (talking, replying, idle):
        s.pipeline = Part()
    replying.pipeline.in_turn = True  # a long reply: no event for a while, still in use
    for _ in range(8):
        await asyncio.sleep(0.1)
        await talking.emit(TranscriptEvent("and then", final=False))
    assert idle.closed.is_set()
    assert not talking.closed.is_set() and not replying.closed.is_set()
    replying.pipeline.in_turn = False  # the reply ended: the idle time runs from here
    await asyncio.sleep(0.9)
    assert replying.closed.is_set() and talking.closed.is_set()
    await mgr.stop()


async def test_emit_updates_session_info_and_forwards() -> None:
    mgr = SessionManager(max_sessions=1, idle_timeout_s=60, max_session_s=60)
    s = mgr.create()
    sent: list[dict[str, Any]] = []
    s.senders.append(sent.append)
    await s.emit(StatusEvent(ProcessingStatus.LISTENING))
    await s.emit(StatusEvent(ProcessingStatus.LISTENING))  # no change: nothing sent
    await s.emit(TranscriptEvent("hello", final=True))
    await s.emit(ErrorEvent("stt_failed", "boom"))
    assert sent[0] == {"type": "status", "connection_status": "connected",
                       "processing_status": "listening", "seq": 1}
    assert [m["type"] for m in sent] == ["status", "transcript", "error"]
    assert s.info.processing_status is ProcessingStatus.LISTENING
    assert s.info.messages_processed == 1 and s.info.errors == 1
    s.set_connection_status(ConnectionStatus.FAILED)
    assert sent[-1]["connection_status"] == "failed"
    await mgr.close_all()
    assert s.info.connection_status is ConnectionStatus.DISCONNECTED


class HangingPart(Part):
    """A pipeline or transport whose close never returns (a peer that never answers)."""

    async def close(self) -> None:
        self.closed += 1
        await asyncio.Event().wait()


async def _ignores_cancel(release: asyncio.Event) -> None:
    while not release.is_set():
        try:
            await release.wait()
        except asyncio.CancelledError:
            pass


async def test_a_part_that_never_closes_does_not_keep_the_slot(monkeypatch) -> None:
    import voice_agent.core.tasks as tasks
    import voice_agent.server.sessions as sessions

    monkeypatch.setattr(sessions, "PART_CLOSE_TIMEOUT_S", 0.1)
    mgr = SessionManager(max_sessions=1, idle_timeout_s=60, max_session_s=60)
    s = mgr.create()
    transport = Part()
    s.pipeline, s.transport = HangingPart(), transport
    release = asyncio.Event()
    stubborn = s.spawn(_ignores_cancel(release), "stubborn")
    monkeypatch.setattr(tasks.stop_within, "__kwdefaults__", {"deadline_s": 0.1})
    try:
        async with asyncio.timeout(2):
            await mgr.close(s.id, 1000, "bye")
        assert transport.closed == 1  # the rest was still released
        assert mgr.get(s.id) is None and s.closed.is_set()
        mgr.create()  # the slot is free again
    finally:
        release.set()
        await stubborn


def test_health_counts_the_sessions_whose_turn_is_stalled() -> None:
    from types import SimpleNamespace

    from voice_agent.server.routes_http import _stalled_sessions

    mgr = SessionManager(max_sessions=3, idle_timeout_s=60, max_session_s=60)
    stuck, fine, bare = mgr.create(), mgr.create(), mgr.create()
    stuck.pipeline = SimpleNamespace(stalled=True, close=None)  # type: ignore[assignment]
    fine.pipeline = SimpleNamespace(stalled=False, close=None)  # type: ignore[assignment]
    assert bare.pipeline is None
    assert _stalled_sessions(SimpleNamespace(sessions=mgr)) == [stuck.id]  # type: ignore[arg-type]
