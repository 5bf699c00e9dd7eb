"""Issue #16's acceptance for Deepgram, on loopback: a spoken question over WebRTC to the real
server, transcribed by Deepgram (tests/helpers/fake_deepgram.py, its documented WebSocket
protocol), answered by a remote LLM (tests/helpers/fake_openai.py) and spoken by espeak.

The vendors are the only stand-ins; the VAD (Silero), the transport (aiortc), the server and
the turn-taking are the real ones. The local LLM is not loaded here (a 1.5B model beside
others' runs on 2 cores): the remote one answers, which is the same pipeline after the
transcript. Checked: the question is heard and answered aloud, each vendor got its key its own
way (Deepgram ``Authorization: Token``, OpenAI ``Bearer``), and neither key shows in
/v3/config or in the logs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.helpers import fake_deepgram
from tests.helpers.fake_deepgram import FakeDeepgram
from tests.helpers.fake_openai import FakeOpenAI
from tests.helpers.rtc import rms, wait_for
from tests.integration.conftest import (RunningServer, connect, make_config, negotiate,
                                        speech_only, start_server)
from voice_agent.services.factory import build_services, load_services

pytestmark = pytest.mark.models

DG_KEY = "dg-acceptance-key-81f2"
OPENAI_KEY = "sk-acceptance-key-7c1d"


@pytest.fixture(scope="module")
def vendors():
    dg = FakeDeepgram(key=DG_KEY, words="what is the capital of france".split()).start()
    llm = FakeOpenAI(reply="The capital of France is Paris.").start()
    yield dg, llm
    dg.stop()
    llm.stop()


@pytest.fixture(scope="module")
async def server(vendors) -> AsyncIterator[RunningServer]:
    dg, llm = vendors
    config = make_config(
        stt={"provider": "deepgram", "api_key": DG_KEY, "base_url": dg.base_url,
             "timeout_s": 5.0},
        ai={"provider": "openai", "base_url": llm.base_url, "api_key": OPENAI_KEY,
            "remote_model": "fake-model", "timeout_s": 5.0},
        voice={"provider": "espeak"})
    services = build_services(config)
    await load_services(services, warmup=True)  # Deepgram's key checked here, on the fake
    running = await start_server(config, services)
    yield running
    await running.stop()
    services.close()


async def test_a_spoken_question_is_heard_by_deepgram_answered_and_spoken(
        server: RunningServer, vendors, question_pcm, caplog: pytest.LogCaptureFixture) -> None:
    dg, llm = vendors
    caplog.set_level(logging.DEBUG)
    async with connect(f"{server.ws}/ws/v3") as client:
        await client.wait_type("connection_established")
        rtc = await negotiate(client)
        try:
            assert await wait_for(lambda: rtc.recorder and rtc.recorder[0].frames, 5)
            pcm, rate = question_pcm
            t_sent = time.monotonic()
            rtc.mic.load(pcm, rate)
            final = await client.wait_type("transcript", 30, final=True)
            assert final["text"] == "what is the capital of france"
            reply = await client.wait_type("ai_response", 30, final=True)
            assert "Paris" in reply["text"]
            await client.wait_type("status", 30, client.messages.index(reply),
                                   processing_status="listening")
            await asyncio.sleep(0.3)  # the last frames are still on the wire
            voice = speech_only(rtc.recorder[0].audio(since=t_sent), 48000)
            assert len(voice) > 0.5 * 48000 and rms(voice) > 0.02, "agent audio is silent"
        finally:
            await rtc.close()
    # Each vendor got its key its own way: the start-up check and the utterance for Deepgram.
    assert len(dg.connections) >= 2, [(c.control, c.audio_bytes) for c in dg.connections]
    assert all(c.auth == f"Token {DG_KEY}" for c in dg.connections)
    # The question's stream (a stream opened by other sound and dropped ends with CloseStream
    # alone).
    # The question's stream: Finalize at the pause (its decisive transcript) or at the end of
    # the turn, and CloseStream; one opened by other sound and dropped has CloseStream alone.
    utterance = next(c for c in dg.connections if "Finalize" in c.control)
    assert utterance.query["encoding"] == "linear16" and utterance.query["sample_rate"] == "16000"
    assert utterance.query["model"] == "nova-3" and utterance.control[-1] == "CloseStream"
    assert llm.requests[-1]["auth"] == f"Bearer {OPENAI_KEY}"
    async with httpx.AsyncClient(base_url=server.http) as http:
        dump = (await http.get("/v3/config")).text
        health = (await http.get("/v3/health")).json()
    assert DG_KEY not in dump and OPENAI_KEY not in dump
    assert health["status"] == "ok" and health["models"]["stt"]["name"] == "deepgram"
    ours = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records
                     if r.name != fake_deepgram.LOGGER)
    assert DG_KEY not in ours and OPENAI_KEY not in ours
