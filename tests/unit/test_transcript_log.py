"""The per-session JSON-lines transcript writer and reader."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from voice_agent.core.events import ErrorEvent, MetricsEvent, ResponseEvent, TranscriptEvent
from voice_agent.server import transcript_log
from voice_agent.server.transcript_log import (TranscriptLog, read_transcript, transcript_path,
                                               valid_session_id)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_records_are_on_disk_as_soon_as_written(tmp_path: Path) -> None:
    sid = uuid.uuid4().hex
    log = TranscriptLog(tmp_path / "t", sid)
    log.start(transport="websocket_audio", mode="streaming")
    log.event(TranscriptEvent("hello there", final=False))  # interims are not kept
    log.event(TranscriptEvent("hello there", final=True))
    # Readable by another reader before the session ends: nothing waits in a buffer.
    assert [r["type"] for r in lines(log.path)] == ["session_start", "transcript"]
    log.event(ResponseEvent("Hi! How can I help you today?", final=True, interrupted=True,
                            spoken_text="Hi!"))
    log.event(ResponseEvent("Sure.", final=True))
    log.event(MetricsEvent({"turn": 1, "stt_ms": 12.5}))
    log.event(ErrorEvent("provider_timeout", "llm took too long"))
    log.end(code=1000, reason="client ended the session")
    log.end(code=1011, reason="twice")  # idempotent
    records = read_transcript(tmp_path / "t", sid)
    assert records is not None
    assert [r["type"] for r in records] == ["session_start", "transcript", "ai_response",
                                            "ai_response", "metrics", "error", "session_end"]
    assert records[0]["transport"] == "websocket_audio" and records[0]["mode"] == "streaming"
    assert records[2]["interrupted"] is True and records[2]["spoken_text"] == "Hi!"
    assert records[3]["spoken_text"] == "Sure." and records[3]["interrupted"] is False
    assert records[4]["stt_ms"] == 12.5
    assert records[-1]["reason"] == "client ended the session" and records[-1]["turns"] == 1
    assert all(isinstance(r["time"], float) for r in records)
    assert (os.stat(log.path).st_mode & 0o777) == 0o600  # conversations are private


def test_ids_are_checked_before_any_path_is_made(tmp_path: Path) -> None:
    for bad in ("../etc/passwd", "..", "", "A" * 32, "0" * 31, "0" * 33, "0" * 32 + "\n",
                "0" * 30 + "/x", "%2e%2e", "0" * 32 + ".jsonl"):
        assert not valid_session_id(bad)
        with pytest.raises(ValueError):
            transcript_path(tmp_path, bad)
    assert valid_session_id(uuid.uuid4().hex)
    assert read_transcript(tmp_path, uuid.uuid4().hex) is None


def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path: Path) -> None:
    sid = uuid.uuid4().hex
    (tmp_path / f"{sid}.jsonl").write_text('{"type": "session_start"}\n[1]\n{"type": "transc')
    assert read_transcript(tmp_path, sid) == [{"type": "session_start"}]


def test_error_flood_is_capped_and_disk_errors_never_raise(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transcript_log, "MAX_ERROR_RECORDS", 3)
    log = TranscriptLog(tmp_path, uuid.uuid4().hex)
    for _ in range(10):
        log.error("rate_limited", "slow down")
    log.error("session_timeout", "idle", fatal=True)  # fatal ones are always kept
    log.end(code=4000, reason="idle")
    records = lines(log.path)
    assert [r["type"] for r in records].count("error") == 4
    assert records[-1]["errors"] == 11
    blocked = tmp_path / "file"
    blocked.write_text("")
    broken = TranscriptLog(blocked / "sub", uuid.uuid4().hex)  # cannot make the folder
    broken.start(transport="webrtc", mode="naive")
    broken.end(code=1000, reason="")


def test_tool_calls_are_recorded_with_their_result_and_latency(tmp_path: Path) -> None:
    from voice_agent.tools import ToolCallEvent
    log = TranscriptLog(tmp_path, uuid.uuid4().hex)
    log.event(ToolCallEvent("door_code", "{}", "4 7 1 9", True, 12.3))
    log.event(ToolCallEvent("weather", '{"city": "X"}', "Error: boom", False, 4.0))
    records = lines(log.path)
    assert records[0] | {"time": 0} == {"time": 0, "type": "tool_call", "name": "door_code",
                                        "arguments": "{}", "result": "4 7 1 9", "ok": True,
                                        "latency_ms": 12.3}
    assert records[1]["ok"] is False and records[1]["result"] == "Error: boom"
