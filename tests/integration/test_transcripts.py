"""Every conversation is on disk as it happens, and readable at /v3/sessions/{id}/transcript."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from tests.helpers.rtc import wait_for
from tests.integration.conftest import TRANSCRIPTS, RunningServer, connect

pytestmark = pytest.mark.models

STORY = "Tell me a long story about a brave knight and a dragon."


async def transcript(srv: RunningServer, sid: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=srv.http) as http:
        return await http.get(f"/v3/sessions/{sid}/transcript")


def types(records: list[dict[str, Any]]) -> list[str]:
    return [r["type"] for r in records]


async def test_a_turn_is_recorded_live_and_kept_after_the_end(server: RunningServer) -> None:
    async with connect(f"{server.ws}/ws/v3/audio") as client:
        sid = (await client.wait_type("connection_established"))["session_id"]
        await client.send({"type": "text", "text": "What is the capital of France?"})
        await client.wait_type("metrics", 60)
        live = await transcript(server, sid)
        assert live.status_code == 200 and live.json()["active"] is True
        records = live.json()["records"]
        assert types(records) == ["session_start", "transcript", "ai_response", "metrics"]
        start, said, reply, metrics = records
        assert start["transport"] == "websocket_audio" and start["mode"] == "streaming"
        assert said["text"] == "What is the capital of France?"
        assert "paris" in reply["text"].lower() and reply["interrupted"] is False
        assert reply["spoken_text"] == reply["text"]
        assert metrics["turn"] == 1 and "llm_first_token_ms" in metrics
        await client.send({"type": "end"})
        assert await client.wait_closed() == 1000
    ended = (await transcript(server, sid)).json()
    assert ended["active"] is False
    assert types(ended["records"])[-1] == "session_end"
    assert ended["records"][-1]["reason"] == "client ended the session"
    # The file is the source: one JSON object per line.
    lines = (TRANSCRIPTS / f"{sid}.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == ended["records"]


async def test_a_client_that_drops_mid_reply_loses_nothing(server: RunningServer) -> None:
    """No close frame, the TCP connection just goes: the reply cut short is still recorded,
    with what had been spoken, and the session ends."""
    async with connect(f"{server.ws}/ws/v3/audio") as client:
        sid = (await client.wait_type("connection_established"))["session_id"]
        await client.send({"type": "text", "text": STORY})
        await client.wait_type("status", 60, processing_status="speaking")
        assert await wait_for(lambda: len(client.binary) > 60, 10)  # over a second heard
        client.ws.transport.abort()
    assert await wait_for(lambda: server.registry.sessions.get(sid) is None, 10)
    records = (await transcript(server, sid)).json()["records"]
    assert types(records) == ["session_start", "transcript", "ai_response", "metrics",
                              "session_end"]
    reply = records[2]
    assert reply["interrupted"] is True
    assert reply["spoken_text"] and reply["text"].startswith(reply["spoken_text"].rstrip(". "))
    assert records[-1]["reason"] == "client disconnected"


async def test_errors_are_recorded(server: RunningServer) -> None:
    async with connect(f"{server.ws}/ws/v3") as client:
        sid = (await client.wait_type("connection_established"))["session_id"]
        await client.send("{not json")
        await client.wait_type("error")
    records = (await transcript(server, sid)).json()["records"]
    assert types(records) == ["session_start", "error", "session_end"]
    assert records[1]["code"] == "invalid_json" and records[1]["fatal"] is False
    assert records[0]["webrtc_mode"] == "audio_only"


@pytest.mark.parametrize("sid", [
    "../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fsecret", "..", ".",
    "0" * 31, "0" * 33, "A" * 32, "0" * 32 + ".jsonl", "0" * 32 + "%00", "0" * 30 + "%2Fx",
    " " + "0" * 31, "secret", "%E2%80%AE" + "0" * 29,
])
async def test_odd_ids_never_reach_the_disk(server: RunningServer, sid: str) -> None:
    # A file a traversal would aim at, next to (and above) the transcripts.
    TRANSCRIPTS.mkdir(parents=True, exist_ok=True)
    (TRANSCRIPTS.parent / "secret.jsonl").write_text('{"type": "leak"}\n')
    async with httpx.AsyncClient(base_url=server.http) as http:
        r = await http.get(f"/v3/sessions/{sid}/transcript")
    assert r.status_code == 404, r.text
    assert "leak" not in r.text


async def test_unknown_session_is_404(server: RunningServer) -> None:
    r = await transcript(server, uuid.uuid4().hex)
    assert r.status_code == 404 and r.json()["detail"] == "unknown session"


async def test_records_are_flushed_before_the_turn_ends(server: RunningServer) -> None:
    """What was said is on disk at once, not when the reply or the session is over."""
    async with connect(f"{server.ws}/ws/v3/audio") as client:
        sid = (await client.wait_type("connection_established"))["session_id"]
        await client.send({"type": "text", "text": STORY})
        await client.wait_type("transcript", 30, final=True)
        path = TRANSCRIPTS / f"{sid}.jsonl"
        assert await wait_for(lambda: "brave knight" in path.read_text(), 2)
