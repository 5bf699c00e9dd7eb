"""The PCM WebSocket sink and inbound conversion, without a server."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from tests.helpers.rtc import tone
from voice_agent.services.base import AudioChunk
from voice_agent.transport.audio_out import FrameQueue
from voice_agent.transport.ws_audio import (AudioFormatError, WebSocketAudioSender,
                                            WebSocketAudioTransport, parse_rate)


async def test_sink_sends_paced_20ms_frames_and_clear_stops_them() -> None:
    sent: list[tuple[float, bytes]] = []
    sink = FrameQueue(16000)
    sender = WebSocketAudioSender(sink, lambda b: sent.append((time.monotonic(), b)))
    sender.start()
    start = time.monotonic()
    await sink.play(AudioChunk(tone(0.5, 22050), 22050))
    assert 0.45 < sink.queued_s() + len(sent) * 0.02 < 0.55
    await asyncio.sleep(0.7)
    assert {len(b) for _, b in sent} == {640}  # 320 samples of 16-bit
    assert 24 <= len(sent) <= 26
    assert sent[-1][0] - start > 0.35  # paced at real time, not dumped at once
    assert sink.playback_started_at is None  # the burst ended
    sent.clear()
    await sink.play(AudioChunk(tone(2.0, 16000), 16000))
    await asyncio.sleep(0.2)
    sink.clear()
    n = len(sent)
    await asyncio.sleep(0.3)
    assert len(sent) <= n + 1 and sink.queued_s() == 0.0
    await sender.close()


async def test_inbound_pcm_is_converted_to_16k_float() -> None:
    got: list[np.ndarray] = []

    async def push(pcm: np.ndarray) -> None:
        got.append(pcm)

    t = WebSocketAudioTransport("s", 48000, lambda b: None, push)
    data = tone(1.0, 48000).astype("<i2").tobytes()
    for i in range(0, len(data), 1921):  # odd-sized pieces: samples split across frames
        await t.handle_binary(data[i:i + 1921])
    pcm = np.concatenate(got)
    assert pcm.dtype == np.float32 and abs(len(pcm) - 16000) < 100
    assert 0.25 < np.abs(pcm).max() < 0.35
    with pytest.raises(AudioFormatError):
        await t.handle_binary(b"\x00" * (48000 * 4 + 2))
    await t.close()


def test_rate_parameter() -> None:
    assert parse_rate(None) == 16000 and parse_rate("48000") == 48000
    for bad in ("44100", "abc", "-1"):
        with pytest.raises(AudioFormatError):
            parse_rate(bad)
