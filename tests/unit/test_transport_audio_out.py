"""The outgoing track: resampling, framing, pacing, clear, backpressure; and over real WebRTC."""

from __future__ import annotations

import asyncio
import time


from tests.helpers.rtc import (PcmPlayerTrack, TrackRecorder, new_peer, rms, tone,
                               wait_for)
from voice_agent.services.base import AudioChunk
from voice_agent.transport.audio_out import FrameQueue, OutgoingAudioTrack
from voice_agent.transport.ice import restrict_host_addresses


async def test_frames_are_20ms_48k_mono_with_steady_pts() -> None:
    track = OutgoingAudioTrack()
    await track.queue.play(AudioChunk(tone(0.1, 22050), 22050))
    frames = [await track.recv() for _ in range(8)]
    assert all(f.sample_rate == 48000 and f.samples == 960 for f in frames)
    assert all(f.layout.name == "mono" and f.format.name == "s16" for f in frames)
    assert [f.pts for f in frames] == [i * 960 for i in range(8)]
    assert all(f.time_base.denominator == 48000 for f in frames)
    track.stop()


async def test_resampling_keeps_duration_and_tail_is_padded() -> None:
    q = FrameQueue()
    for rate in (16000, 22050, 24000, 48000):
        q.clear()
        await q.play(AudioChunk(tone(1.0, rate), rate))
        assert abs(q.queued_s() - 1.0) < 0.01, rate
    q.clear()
    await q.play(AudioChunk(tone(0.03, 48000), 48000))  # 1.5 frames
    assert q.take() is not None and q.take() is not None and q.take() is None


async def test_pacing_follows_an_absolute_clock() -> None:
    track = OutgoingAudioTrack()
    start = time.monotonic()
    for _ in range(51):  # the first frame goes at once, then 50 more at 20 ms
        await track.recv()
    elapsed = time.monotonic() - start
    assert 0.95 < elapsed < 1.15, elapsed
    track.stop()


async def test_burst_timing_and_clear() -> None:
    track = OutgoingAudioTrack()
    await track.recv()  # the consumer is alive
    assert track.queue.playback_started_at is None
    await track.queue.play(AudioChunk(tone(1.0, 16000), 16000))
    before = time.monotonic()
    await track.recv()
    assert track.queue.playback_started_at is not None and track.queue.playback_started_at >= before
    assert 0.9 < track.queue.queued_s() < 1.0
    track.queue.clear()
    assert track.queue.queued_s() == 0.0 and track.queue.playback_started_at is None
    frame = await track.recv()
    assert not frame.to_ndarray().any()  # silence right after clear
    track.stop()


async def test_backpressure_waits_while_over_two_seconds_queued() -> None:
    track = OutgoingAudioTrack()
    peak = 0.0

    async def consume() -> None:
        while True:
            await track.recv()

    consumer = asyncio.create_task(consume())
    start = time.monotonic()
    for _ in range(6):  # 3 s of audio in 0.5 s chunks
        await track.queue.play(AudioChunk(tone(0.5, 22050), 22050))
        peak = max(peak, track.queue.queued_s())
    assert peak <= 2.55
    assert time.monotonic() - start > 0.4  # it had to wait for the consumer
    consumer.cancel()
    track.stop()


async def test_clear_during_backpressure_drops_the_waiting_chunk() -> None:
    track = OutgoingAudioTrack()
    await track.recv()
    await track.queue.play(AudioChunk(tone(2.5, 16000), 16000))
    waiting = asyncio.create_task(track.queue.play(AudioChunk(tone(1.0, 16000), 16000)))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    track.queue.clear()
    await asyncio.wait_for(waiting, 1.0)
    assert track.queue.queued_s() == 0.0
    track.stop()


async def test_without_a_consumer_play_never_blocks() -> None:
    q = FrameQueue()
    q._last_take -= 5  # nobody has taken a frame for 5 s
    start = time.monotonic()
    for _ in range(10):
        await q.play(AudioChunk(tone(1.0, 16000), 16000))
    assert time.monotonic() - start < 0.5
    assert q.queued_s() == 0.0 and q.dropped_s > 9


async def test_over_real_webrtc_tone_then_silence_then_clear() -> None:
    with restrict_host_addresses(["127.0.0.1"]):
        server, client = new_peer(), new_peer()
        out = OutgoingAudioTrack()
        recorder: list[TrackRecorder] = []
        client.on("track", lambda t: recorder.append(TrackRecorder(t)))
        client.addTrack(PcmPlayerTrack())
        await client.setLocalDescription(await client.createOffer())
        await server.setRemoteDescription(client.localDescription)
        server.addTrack(out)
        await server.setLocalDescription(await server.createAnswer())
        await client.setRemoteDescription(server.localDescription)
        try:
            assert await wait_for(lambda: recorder and len(recorder[0].frames) > 10, 5.0)
            rec = recorder[0]
            mark = time.monotonic()
            await out.queue.play(AudioChunk(tone(0.6, 22050), 22050))
            await asyncio.sleep(1.0)
            heard = rec.audio(since=mark)
            assert rms(heard) > 0.05  # the tone arrived
            tail = rec.audio(since=time.monotonic() - 0.2)
            assert rms(tail) < 0.01  # then silence
            await out.queue.play(AudioChunk(tone(2.0, 22050), 22050))
            await asyncio.sleep(0.4)
            out.queue.clear()
            cleared_at = time.monotonic()
            await asyncio.sleep(0.6)
            # Within ~250 ms of clear() (jitter buffer + decoder), the received audio is silent.
            assert rms(rec.audio(since=cleared_at + 0.25)) < 0.01
            stats = await server.getStats()
            sent = [s for s in stats.values() if s.type == "outbound-rtp"]
            assert sent and sent[0].packetsSent > 50
            await rec.stop()
        finally:
            await client.close()
            await server.close()
