"""Sinks that "play" audio in real time against a clock, like a transport track does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import numpy as np

from voice_agent.pipeline.metrics import TurnMetrics
from voice_agent.pipeline.playback import watch_playback
from voice_agent.services.base import AudioChunk
from voice_agent.transport.audio_out import FrameQueue


async def drain(queue: FrameQueue, stop: asyncio.Event) -> None:
    """What OutgoingAudioTrack does: one 20 ms frame per 20 ms, paced on an absolute clock."""
    t0, n = time.monotonic(), 0
    while not stop.is_set():
        queue.take()
        n += 1
        await asyncio.sleep(max(0.0, t0 + n * 0.02 - time.monotonic()))


async def play_watched(speak: Callable[[FrameQueue], Awaitable[None]], metrics: TurnMetrics, *,
                       timeout_s: float = 120.0, watch_timeout_s: float = 1.0) -> float:
    """Run ``speak(queue)`` into a frame queue drained in real time, with the pipeline's playback
    watcher marking ``metrics``, until the last frame went out. Returns the time.monotonic() at
    which ``speak`` was started."""
    queue, stop = FrameQueue(), asyncio.Event()
    consumer = asyncio.create_task(drain(queue, stop))
    released = time.monotonic()
    speaker = asyncio.create_task(speak(queue))
    watcher = asyncio.create_task(watch_playback(queue, metrics, speaker))
    try:
        await asyncio.wait_for(speaker, timeout_s)
        while queue.queued_s() > 0:
            await asyncio.sleep(0.02)
        await asyncio.wait_for(watcher, watch_timeout_s)
    finally:
        stop.set()
        await consumer
    return released


class PacedSink:
    def __init__(self) -> None:
        self.chunks: list[AudioChunk] = []
        self._queued_s = 0.0       # audio queued in the current burst
        self._burst_start: float | None = None
        self.cleared = 0
        self._played_before = 0.0  # audio of earlier bursts, all played

    async def play(self, chunk: AudioChunk) -> None:
        now = time.monotonic()
        if self._burst_start is None or self.queued_s() == 0:
            self._played_before += self._queued_s
            self._burst_start, self._queued_s = now, 0.0
        self.chunks.append(chunk)
        self._queued_s += chunk.duration_s

    def clear(self) -> None:
        self.cleared += 1
        self._played_before += self._burst_played_s()
        self._burst_start, self._queued_s = None, 0.0

    def _burst_played_s(self) -> float:
        if self._burst_start is None:
            return 0.0
        return min(self._queued_s, time.monotonic() - self._burst_start)

    def played_s(self) -> float:
        """All audio played since the sink was made."""
        return self._played_before + self._burst_played_s()

    def queued_s(self) -> float:
        return max(0.0, self._queued_s - self._burst_played_s())

    @property
    def playback_started_at(self) -> float | None:
        return self._burst_start

    def audio(self) -> tuple[np.ndarray, int]:
        if not self.chunks:
            return np.zeros(0, np.int16), 22050
        return np.concatenate([c.pcm for c in self.chunks]), self.chunks[0].sample_rate
