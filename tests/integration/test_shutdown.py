"""Clients that vanish, sessions that run too long, and a server stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.rtc import wait_for
from tests.integration.conftest import TRANSCRIPTS, RunningServer, connect, free_port

pytestmark = pytest.mark.models


def records(directory: Path, sid: str) -> list[dict]:
    return [json.loads(line) for line in (directory / f"{sid}.jsonl").read_text().splitlines()]


async def test_a_client_that_stops_reading_mid_reply_is_cleaned_up(server_factory) -> None:
    idle = 1.0
    srv: RunningServer = await server_factory(server={"idle_timeout_s": idle})
    async with connect(f"{srv.ws}/ws/v3/audio") as client:
        sid = (await client.wait_type("connection_established"))["session_id"]
        await client.send({"type": "text",
                           "text": "Tell me a long story about a brave knight and a dragon."})
        while not [m for m in client.messages if m.get("processing_status") == "speaking"]:
            await asyncio.sleep(0.1)
        # Gone without a word: no close frame, nothing read or sent any more. The loopback
        # socket's buffers take minutes of audio, so the reply plays on to them (a reply is
        # no idleness); once it ended, the idle time runs out. 60 tokens: ~20 s of speech.
        client.ws.transport.pause_reading()
        gone_at = time.monotonic()
        assert await wait_for(lambda: srv.registry.sessions.get(sid) is None, idle + 40)
        assert time.monotonic() - gone_at < idle + 40
        client.ws.transport.abort()
    end = records(TRANSCRIPTS, sid)[-1]
    assert end["type"] == "session_end" and end["code"] == 4000
    kinds = [r["type"] for r in records(TRANSCRIPTS, sid)]
    assert "ai_response" in kinds  # the reply cut short is kept


async def test_max_session_length(server_factory) -> None:
    srv: RunningServer = await server_factory(server={"max_session_s": 0.5})
    async with connect(f"{srv.ws}/ws/v3") as client:
        await client.wait_type("connection_established")
        err = await client.wait_type("error", 5)
        assert err["code"] == "session_timeout" and err["fatal"] is True
        assert await client.wait_closed() == 4001


def _serve_command(kind: str, port: int) -> list[str]:
    if kind == "runner":
        return [sys.executable, "-m", "voice_agent.server.runner"]
    return [str(Path(sys.executable).with_name("voice-agent")), "serve", "--port", str(port)]


@pytest.mark.parametrize("kind", ["runner", "cli"])
async def test_sigterm_closes_every_session_gracefully(kind: str, tmp_path: Path) -> None:
    port = free_port()
    transcripts = tmp_path / "transcripts"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VOICE_AGENT_SERVER__PORT": str(port),
           "VOICE_AGENT_SERVER__TRANSCRIPTS_DIR": str(transcripts),
           "VOICE_AGENT_WEBRTC__HOST_ADDRESSES": '["127.0.0.1"]',
           # The smallest models: this test is about the shutdown, not the answers.
           "VOICE_AGENT_STT__MODEL": "tiny.en", "VOICE_AGENT_AI__MODEL": "smollm2-135m",
           "VOICE_AGENT_VOICE__PROVIDER": "espeak", "VOICE_AGENT_AI__THREADS": "1",
           "VOICE_AGENT_STT__THREADS": "1"}
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(_serve_command(kind, port), env=env, cwd=tmp_path, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            while True:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                try:
                    if (await http.get("/v3/health")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        # uvloop, not asyncio's own loop: under load that one let RTP pile up in the sockets
        # until ICE consent expired (docs/reliability.md).
        assert "event loop uvloop" in log.read_text(), log.read_text()[-3000:]
        async with connect(f"ws://127.0.0.1:{port}/ws/v3/audio") as audio, \
                connect(f"ws://127.0.0.1:{port}/ws/v3") as signaling:
            ids = [(await c.wait_type("connection_established"))["session_id"]
                   for c in (audio, signaling)]
            proc.send_signal(signal.SIGTERM)
            stopped_at = time.monotonic()
            assert await audio.wait_closed(5) == 1001
            assert await signaling.wait_closed(5) == 1001
            assert audio.ws.close_reason == "server shutdown"
        code = await asyncio.to_thread(proc.wait, 10)
        assert code == 0, log.read_text()[-3000:]
        assert time.monotonic() - stopped_at < 5
        for sid in ids:
            end = records(transcripts, sid)[-1]
            assert end["type"] == "session_end" and end["code"] == 1001
            assert end["reason"] == "server shutdown"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
