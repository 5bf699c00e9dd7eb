"""Sinks report playback (first frame, running dry, what was sent) and never lose a cancel."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers.rtc import tone
from voice_agent.pipeline.sink import BufferSink, Playback, PlaybackReport
from voice_agent.services.base import AudioChunk
from voice_agent.transport.audio_out import FrameQueue


def chunk(seconds: float, rate: int = 48_000) -> AudioChunk:
    return AudioChunk(tone(seconds, rate), rate)


async def test_a_cancel_that_comes_with_clear_while_play_waits_for_room_is_not_lost() -> None:
    """The barge-in order: clear() (which makes room) then cancel, in one loop turn. On Python
    3.11 ``asyncio.wait_for`` returned normally here and the cancel was lost: the reply task
    went on to wait for its next piece forever and the session went deaf (issue #12)."""
    q = FrameQueue()
    q.take()  # a consumer is alive
    await q.play(chunk(2.5))  # over the 2 s the queue holds: the next play waits
    waiting = asyncio.create_task(q.play(chunk(1.0)))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    q.clear()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert waiting.cancelled()


async def test_reports_first_frame_and_running_dry_with_what_was_sent() -> None:
    q = FrameQueue()
    reports: list[PlaybackReport] = []
    q.on_playback = reports.append
    q.take()
    await q.play(chunk(0.05))  # 2.5 frames
    while q.take() is not None:
        pass
    assert [r.kind for r in reports] == [Playback.STARTED, Playback.DRY]
    assert reports[0].at <= reports[1].at
    assert reports[1].played_s == pytest.approx(0.06)  # three frames, the last padded
    assert q.played_s() == pytest.approx(0.06)
    q.clear()
    assert q.played_s() == 0.0


async def test_finished_returns_when_the_last_frame_went_out() -> None:
    q = FrameQueue()
    q.take()
    await q.play(chunk(0.1))
    waiter = asyncio.create_task(q.finished())
    await asyncio.sleep(0)
    for _ in range(4):
        q.take()
        await asyncio.sleep(0)
        assert not waiter.done()
    q.take()  # the fifth frame: all sent
    q.take()  # the empty take that notices
    await asyncio.wait_for(waiter, 1)


async def test_finished_does_not_wait_for_a_consumer_that_is_gone() -> None:
    q = FrameQueue()
    q.take()
    await q.play(chunk(0.5))
    q.attached = False  # the track went away
    async with asyncio.timeout(1):
        await q.finished()
    assert q.queued_s() == 0.0 and q.dropped_s > 0


async def test_an_unattached_queue_drops_audio_at_once() -> None:
    q = FrameQueue()
    q.attached = False
    async with asyncio.timeout(0.5):
        for _ in range(5):
            await q.play(chunk(1.0))
    assert q.queued_s() == 0.0 and q.dropped_s == pytest.approx(5.0)


async def test_buffer_sink_plays_at_once_and_is_always_finished() -> None:
    sink = BufferSink()
    reports: list[PlaybackReport] = []
    sink.on_playback = reports.append
    await sink.play(chunk(0.5, 22050))
    await sink.play(chunk(0.25, 22050))
    assert [r.kind for r in reports] == [Playback.STARTED]
    assert sink.played_s() == pytest.approx(0.75, abs=1e-3) and sink.queued_s() == 0.0
    async with asyncio.timeout(0.1):
        await sink.finished()
    sink.clear()
    assert sink.played_s() == 0.0 and sink.playback_started_at is None
    assert len(sink.audio()[0]) == len(tone(0.5, 22050)) + len(tone(0.25, 22050))  # clear() keeps what was "played"
