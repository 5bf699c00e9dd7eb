"""The raw-PCM WebSocket transport (/ws/v3/audio), end to end with the real models."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from tests.helpers.rtc import rms
from tests.integration.conftest import Client, RunningServer, connect, speech_only

pytestmark = pytest.mark.models


def resample_int16(pcm: np.ndarray, src: int, dst: int) -> np.ndarray:
    import av

    resampler = av.AudioResampler(format="s16", layout="mono", rate=dst)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm, np.int16).reshape(1, -1),
                                       format="s16", layout="mono")
    frame.sample_rate = src
    out = resampler.resample(frame) + resampler.resample(None)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in out]).astype(np.int16)


async def stream_pcm(client: Client, pcm: np.ndarray, rate: int, frame_ms: int = 20) -> None:
    """Send PCM16 LE frames paced at real time, as a microphone would."""
    step = rate * frame_ms // 1000
    t0 = time.monotonic()
    for i, start in enumerate(range(0, len(pcm), step)):
        await client.send(pcm[start:start + step].astype("<i2").tobytes())
        wait = t0 + (i + 1) * frame_ms / 1000 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)


def received_audio(client: Client, since: float = 0.0) -> np.ndarray:
    data = b"".join(b for t, b in client.binary if t >= since)
    return np.frombuffer(data, "<i2")


async def test_spoken_question_over_pcm_websocket(server: RunningServer, services,
                                                  question_pcm) -> None:
    pcm48, _ = question_pcm
    pcm16 = resample_int16(pcm48, 48000, 16000)
    async with connect(f"{server.ws}/ws/v3/audio") as client:
        hello = await client.wait_type("connection_established")
        assert hello["transport"] == "websocket_audio"
        assert hello["audio"] == {"encoding": "pcm_s16le", "sample_rate": 16000, "channels": 1,
                                  "frame_ms": 20}
        await stream_pcm(client, pcm16, 16000)
        final = await client.wait_type("transcript", 30, final=True)
        assert "capital" in final["text"].lower(), final
        reply = await client.wait_type("ai_response", 60, final=True)
        assert "paris" in reply["text"].lower()
        after = client.messages.index(reply)
        await client.wait_type("status", 30, after, processing_status="listening")
        voice = speech_only(received_audio(client), 16000)
        assert len(voice) > 0.5 * 16000 and rms(voice) > 0.02
        # Paced at real time: the audio took about as long to arrive as it lasts.
        times = [t for t, _ in client.binary]
        assert times[-1] - times[0] > 0.6 * len(received_audio(client)) / 16000
        text = (await asyncio.to_thread(services.stt.transcribe_full_sync, voice.astype(np.float32) / 32768)).text.lower()
        assert "paris" in text, text


async def test_negotiated_rate_text_turn_and_interrupt(server: RunningServer) -> None:
    async with connect(f"{server.ws}/ws/v3/audio?rate=48000") as client:
        hello = await client.wait_type("connection_established")
        assert hello["audio"]["sample_rate"] == 48000
        await client.send(np.zeros(4800, "<i2").tobytes())  # 100 ms of silence is accepted
        await client.send({"type": "ping", "timestamp": 7})
        assert (await client.wait_type("pong"))["timestamp"] == 7
        await client.send({"type": "text",
                           "text": "Tell me a long story about a brave knight and a dragon."})
        await client.wait_type("status", 60, processing_status="speaking")
        deadline = time.monotonic() + 10
        while len(received_audio(client)) < 48000 * 0.5:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        frame_bytes = {len(b) for _, b in client.binary}
        assert frame_bytes == {960 * 2}  # 20 ms at 48 kHz, 16-bit mono
        await client.send({"type": "interrupt"})
        sent_at = time.monotonic()
        reply = await client.wait_type("ai_response", 10, final=True)
        assert reply.get("interrupted") is True
        await asyncio.sleep(0.5)
        late = received_audio(client, since=sent_at + 0.15)
        assert len(late) < 48000 * 0.1, "audio kept coming after the interrupt"
        await client.send({"type": "offer", "sdp": "v=0"})
        err = await client.wait_type("error")
        assert err["code"] == "unsupported" and err["fatal"] is False
        await client.send(b"\x01")  # an odd byte is kept for the next frame, not an error
        await client.send({"type": "end"})
        assert await client.wait_closed() == 1000
    # Every JSON message carries seq, 1, 2, 3, ...: on this socket (no data channel to mirror
    # to) without a gap, whatever its kind.
    assert [m["seq"] for m in client.messages] == list(range(1, len(client.messages) + 1))
    assert {"connection_established", "pong", "status", "transcript", "ai_response",
            "error"} <= {m["type"] for m in client.messages}


async def test_bad_rate_is_refused(server: RunningServer) -> None:
    async with connect(f"{server.ws}/ws/v3/audio?rate=12345") as client:
        err = await client.wait_type("error")
        assert err["code"] == "invalid_message" and err["fatal"] is True
        assert "seq" not in err  # refused before a session exists
        assert await client.wait_closed() == 1008


async def test_audio_faster_than_real_time_is_read_at_real_time(server_factory) -> None:
    """60 s of speech sent in 1.5 s made the server run VAD and Whisper ~40x real time for one
    session and slowed every other session (issue #13): after a 2 s burst, the server reads the
    socket at real time; nothing is dropped, and the client is told once."""
    srv = await server_factory(server={"audio_speed": 1.0, "audio_burst_s": 2.0})
    async with connect(f"{srv.ws}/ws/v3/audio") as client:
        await client.wait_type("connection_established")
        frame = np.zeros(1600, "<i2").tobytes()  # 0.1 s of silence
        sent_at = time.monotonic()
        for _ in range(60):  # 6 s of audio, at once
            await client.send(frame)
        err = await client.wait_type("error", 5, code="rate_limited")
        assert err["fatal"] is False and "real time" in err["message"]
        session = srv.registry.sessions.list()[0]
        await asyncio.sleep(1.0)
        taken = (await session.transport.stats())["inbound_audio_s"]
        elapsed = time.monotonic() - sent_at
        assert taken <= 2.0 + elapsed + 0.3, (taken, elapsed)  # the burst, then real time
        deadline = time.monotonic() + 10
        while (await session.transport.stats())["inbound_audio_s"] < 6.0 - 1e-6:
            assert time.monotonic() < deadline, "the rest of the audio was never read"
            await asyncio.sleep(0.1)
        assert time.monotonic() - sent_at >= 6.0 - 2.0 - 0.3  # all of it, at real time
        assert len([m for m in client.messages if m.get("code") == "rate_limited"]) == 1
