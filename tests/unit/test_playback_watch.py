"""The playback watcher on the real outgoing frame queue, drained at real time like a track."""

from __future__ import annotations

import asyncio

import numpy as np

from voice_agent.pipeline.metrics import TurnMetrics
from voice_agent.services.base import AudioChunk
from voice_agent.transport.audio_out import FrameQueue
from tests.helpers.paced_sink import play_watched


def tone(seconds: float, rate: int = 48_000) -> AudioChunk:
    t = np.arange(int(seconds * rate)) / rate
    return AudioChunk(pcm=(8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16), sample_rate=rate)


async def play_pieces(queue: FrameQueue, pieces: list[tuple[float, float]]) -> None:
    """(wait before, seconds of audio) per piece, as the reply speaker hands them over."""
    for wait_s, seconds in pieces:
        await asyncio.sleep(wait_s)
        await queue.play(tone(seconds))


async def watch(pieces: list[tuple[float, float]]) -> tuple[TurnMetrics, float]:
    metrics = TurnMetrics(turn=1)
    released = await play_watched(lambda queue: play_pieces(queue, pieces), metrics)
    return metrics, released


async def test_a_late_second_piece_is_counted_as_a_gap_and_the_first_frame_keeps_its_time():
    metrics, released = await watch([(0.05, 0.2), (0.45, 0.5)])
    sent_after = metrics.marks["first_audio_sent"] - released
    assert 0.04 <= sent_after < 0.12, sent_after  # the first piece's frame, not the second's
    assert metrics.playback_gaps == 1
    assert 150 <= metrics.playback_gap_max_ms <= 350, metrics.playback_gap_max_ms  # ~250 ms


async def test_pieces_that_arrive_in_time_play_without_a_gap():
    metrics, _ = await watch([(0.0, 0.4), (0.2, 0.4), (0.2, 0.3)])
    assert metrics.playback_gaps == 0 and metrics.playback_gap_max_ms == 0
    assert metrics.as_dict()["playback_gaps"] == 0
