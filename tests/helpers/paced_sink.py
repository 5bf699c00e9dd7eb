"""Sinks that "play" audio in real time against a clock, like a transport track does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import numpy as np

from voice_agent.pipeline.metrics import TurnMetrics
from voice_agent.pipeline.playback import PlaybackWatch
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
    watch = PlaybackWatch(metrics)
    queue.on_playback = watch.report
    consumer = asyncio.create_task(drain(queue, stop))
    released = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            await speak(queue)
        watch.done_writing = True
        async with asyncio.timeout(watch_timeout_s + 2 * queue.max_queued_s):
            await queue.finished()
    finally:
        stop.set()
        await consumer
    return released


class PacedSink(FrameQueue):
    """A frame queue drained in real time by its own task, as a transport's sender drains it;
    it also keeps what it was given, and the audio sent over its whole life."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[AudioChunk] = []
        self.cleared = 0
        self._played_before = 0.0  # audio of earlier bursts, sent before a clear()
        self._stop = asyncio.Event()
        self._consumer: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._consumer is None:
            self._last_take = time.monotonic()  # alive from now on, before its first take
            self._consumer = asyncio.get_running_loop().create_task(drain(self, self._stop))

    async def stop(self) -> None:
        self._stop.set()
        if self._consumer is not None:
            await self._consumer

    async def play(self, chunk: AudioChunk) -> None:
        self.start()
        self.chunks.append(chunk)
        await super().play(chunk)

    def clear(self) -> None:
        self.cleared += 1
        self._played_before += super().played_s()
        super().clear()

    def total_played_s(self) -> float:
        """All audio sent since the sink was made."""
        return self._played_before + self.played_s()

    def audio(self) -> tuple[np.ndarray, int]:
        if not self.chunks:
            return np.zeros(0, np.int16), 22050
        return np.concatenate([c.pcm for c in self.chunks]), self.chunks[0].sample_rate
