"""Every server message carries ``seq``: one counter per session, assigned in Session._stamp.

Mirrored messages (to the WebSocket and the data channel) carry the same number on both; a reply
sent to one channel only still takes the next number, so no number is ever used twice.
"""

from __future__ import annotations

import json
from typing import Any

from voice_agent.core.events import (ErrorEvent, MetricsEvent, ResponseEvent, StatusEvent,
                                     TranscriptEvent)
from voice_agent.core.status import ConnectionStatus, ProcessingStatus
from voice_agent.server.controller import SessionController
from voice_agent.server.sessions import SessionManager
from voice_agent.transport import protocol


class Channel:
    """A fake sender: keeps what it was given, as the client would read it (JSON)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(json.loads(json.dumps(message)))

    @property
    def seqs(self) -> list[int]:
        return [m["seq"] for m in self.messages]


def two_channels(mgr: SessionManager) -> tuple[Any, Channel, Channel]:
    session = mgr.create()
    ws, dc = Channel(), Channel()
    session.senders += [ws, dc]
    return session, ws, dc


async def test_seq_rises_by_one_across_every_kind_of_message() -> None:
    mgr = SessionManager(max_sessions=2, idle_timeout_s=60, max_session_s=60)
    s, ws, dc = two_channels(mgr)
    s.reply(ws, protocol.connection_established(s.id))  # the first message: seq 1
    s.reply(ws, protocol.answer("v=0"))
    await s.emit(StatusEvent(ProcessingStatus.LISTENING))
    await s.emit(TranscriptEvent("hel", final=False))
    await s.emit(TranscriptEvent("hello", final=True))
    await s.emit(ResponseEvent("Hi", final=False))
    await s.emit(ResponseEvent("Hi there.", final=True, interrupted=True, spoken_text="Hi"))
    await s.emit(MetricsEvent({"turn": 1, "stt_ms": 12.0}))
    await s.emit(ErrorEvent("provider_error", "boom"))
    s.set_connection_status(ConnectionStatus.CONNECTING)
    s.send_error("invalid_json", "not JSON", reply=dc)  # an answer to the data channel only
    s.reply(dc, protocol.pong(1.0, 2.0))
    s.send_error("session_timeout", "idle", fatal=True)
    everything = {m["seq"]: m for m in ws.messages + dc.messages}
    assert sorted(everything) == list(range(1, 14)) == list(range(1, s.seq + 1))
    assert [everything[n]["type"] for n in sorted(everything)] == [
        "connection_established", "answer", "status", "transcript", "transcript", "ai_response",
        "ai_response", "metrics", "error", "status", "error", "pong", "error"]
    # On each channel the numbers only rise; the other channel's replies are gaps.
    assert ws.seqs == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13]
    assert dc.seqs == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    # Nothing else changed: the fields are those of the builders, plus seq.
    assert everything[12] == {"type": "pong", "timestamp": 1.0, "server_time": 2.0, "seq": 12}
    await mgr.close_all()


async def test_mirrored_copies_share_one_seq() -> None:
    mgr = SessionManager(max_sessions=1, idle_timeout_s=60, max_session_s=60)
    s, ws, dc = two_channels(mgr)
    await s.emit(TranscriptEvent("yes", final=True))
    await s.emit(TranscriptEvent("yes", final=True))  # said twice: two messages, two numbers
    s.send(protocol.status("connected", "idle"))
    assert ws.messages == dc.messages
    assert ws.seqs == [1, 2, 3]
    assert [m["text"] for m in ws.messages[:2]] == ["yes", "yes"]
    await mgr.close_all()


async def test_a_message_without_senders_still_takes_a_number() -> None:
    mgr = SessionManager(max_sessions=1, idle_timeout_s=60, max_session_s=60)
    s = mgr.create()
    s.send(protocol.status("connected", "idle"))  # nobody listening yet: a gap, no reuse
    ws = Channel()
    s.senders.append(ws)
    s.send(protocol.status("connected", "listening"))
    assert ws.seqs == [2]
    await mgr.close_all()


async def test_sessions_count_independently() -> None:
    mgr = SessionManager(max_sessions=2, idle_timeout_s=60, max_session_s=60)
    a, a_ws, _ = two_channels(mgr)
    b, b_ws, _ = two_channels(mgr)
    for text in ("one", "two", "three"):
        await a.emit(TranscriptEvent(text, final=True))
    await b.emit(TranscriptEvent("first", final=True))
    b.reply(b_ws, protocol.pong(None, 0.0))
    await a.emit(TranscriptEvent("four", final=True))
    assert a_ws.seqs == [1, 2, 3, 4]
    assert b_ws.seqs == [1, 2]
    await mgr.close_all()


async def test_controller_replies_carry_the_sessions_next_seq() -> None:
    """Pong and the errors answering a bad message go to the channel it came on, numbered."""
    mgr = SessionManager(max_sessions=1, idle_timeout_s=60, max_session_s=60)
    s, ws, dc = two_channels(mgr)
    controller = SessionController(s, mgr, pipeline=None, webrtc=None,  # type: ignore[arg-type]
                                   max_message_bytes=1024, messages_per_second=100)
    s.reply(ws, protocol.connection_established(s.id))
    await controller.handle_raw('{"type": "ping", "timestamp": 5}', via="signaling", reply=ws)
    await controller.handle_raw("not json", via="data_channel", reply=dc)
    await controller.handle_raw('{"type": "nope"}', via="data_channel", reply=dc)
    await controller.handle_raw('{"type": "offer", "sdp": "v=0"}', via="signaling", reply=ws)
    await controller.handle_raw('{"type": "ping"}', via="data_channel", reply=dc)
    assert [(m["type"], m["seq"]) for m in ws.messages] == [
        ("connection_established", 1), ("pong", 2), ("error", 5)]
    assert [(m["type"], m.get("code"), m["seq"]) for m in dc.messages] == [
        ("error", "invalid_json", 3), ("error", "unknown_type", 4), ("pong", None, 6)]
    assert ws.messages[1]["timestamp"] == 5
    await mgr.close_all()
