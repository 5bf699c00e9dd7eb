"""Issue #16's acceptance on loopback: a spoken question over WebRTC to the real server, heard
by Deepgram (tests/helpers/fake_deepgram.py), answered by the local LLM (llama.cpp, the small
packaged SmolLM2 to spare the 2 cores) and spoken by ElevenLabs (tests/helpers/
fake_elevenlabs.py), each fake speaking its vendor's documented wire protocol. The VAD, the
transport, the server and the turn-taking are the real ones. Checked: heard, answered and
spoken aloud; each vendor got its key its own way (Deepgram ``Authorization: Token``,
ElevenLabs ``xi-api-key``); neither key in /v3/config nor in the logs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.helpers import fake_deepgram
from tests.helpers.fake_deepgram import FakeDeepgram
from tests.helpers.fake_elevenlabs import FakeElevenLabs
from tests.helpers.rtc import rms, wait_for
from tests.integration.conftest import (RunningServer, connect, make_config, negotiate,
                                        speech_only, start_server)
from voice_agent.services.factory import build_services, load_services

pytestmark = pytest.mark.models

DG_KEY = "dg-acceptance-key-5a90"
XI_KEY = "xi-acceptance-key-3e7b"


@pytest.fixture(scope="module")
def vendors():
    dg = FakeDeepgram(key=DG_KEY, words="what is the capital of france".split()).start()
    xi = FakeElevenLabs(api_key=XI_KEY).start()
    yield dg, xi
    dg.stop()
    xi.stop()


@pytest.fixture(scope="module")
async def server(vendors) -> AsyncIterator[RunningServer]:
    dg, xi = vendors
    config = make_config(
        stt={"provider": "deepgram", "api_key": DG_KEY, "base_url": dg.base_url,
             "timeout_s": 5.0},
        ai={"provider": "llamacpp", "model": "smollm2-135m", "parallel_slots": 1,
            "max_tokens": 40},
        voice={"provider": "elevenlabs", "api_key": XI_KEY, "base_url": xi.base_url,
               "voice_id": "voice-1"})
    services = build_services(config)
    await load_services(services, warmup=True)  # both keys checked here, on the fakes
    running = await start_server(config, services)
    yield running
    await running.stop()
    services.close()


async def test_heard_by_deepgram_answered_by_the_local_llm_spoken_by_elevenlabs(
        server: RunningServer, vendors, question_pcm, caplog: pytest.LogCaptureFixture) -> None:
    dg, xi = vendors
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
            reply = await client.wait_type("ai_response", 60, final=True)
            assert reply["text"].strip(), "the local LLM said nothing"
            await client.wait_type("status", 60, client.messages.index(reply),
                                   processing_status="listening")
            await asyncio.sleep(0.3)  # the last frames are still on the wire
            voice = speech_only(rtc.recorder[0].audio(since=t_sent), 48000)
            assert len(voice) > 0.3 * 48000 and rms(voice) > 0.02, "agent audio is silent"
        finally:
            await rtc.close()
    # Each vendor got its key its own way: Deepgram at the start-up check and the utterance.
    assert len(dg.connections) >= 2 and all(c.auth == f"Token {DG_KEY}" for c in dg.connections)
    # The question's stream: Finalize at the pause (its decisive transcript) or at the end of
    # the turn, then CloseStream; a stream opened by other sound and dropped has CloseStream
    # alone.
    utterance = next(c for c in dg.connections if "Finalize" in c.control)
    assert utterance.query["encoding"] == "linear16" and utterance.query["sample_rate"] == "16000"
    assert utterance.query["model"] == "nova-3" and utterance.control[-1] == "CloseStream"
    spoken = [s for s in xi.sockets if s.get("messages")]
    assert spoken, "ElevenLabs was never asked to speak"
    assert all(s["headers"].get("xi-api-key") == XI_KEY for s in spoken)
    assert all(s["query"].get("output_format", "").startswith("pcm_") for s in spoken)
    async with httpx.AsyncClient(base_url=server.http) as http:
        dump = (await http.get("/v3/config")).text
        health = (await http.get("/v3/health")).json()
    assert DG_KEY not in dump and XI_KEY not in dump
    assert health["status"] == "ok" and health["models"]["stt"]["name"] == "deepgram"
    assert health["models"]["tts"]["name"] == "elevenlabs"
    ours = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records
                     if r.name != fake_deepgram.LOGGER)
    assert DG_KEY not in ours and XI_KEY not in ours
