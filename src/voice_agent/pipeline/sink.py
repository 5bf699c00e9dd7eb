"""Where the agent's voice goes, and what the listener has heard of it.

Every sink (the WebRTC track's and the WebSocket's frame queue, the CLI's buffer) is a
:class:`SinkBase`: it takes audio with :meth:`~SinkBase.play`, drops it with
:meth:`~SinkBase.clear` (barge-in), and *reports* playback instead of being polled: a
:class:`PlaybackReport` when a burst of audio starts going out and when it runs dry, the seconds
sent since the last clear (:meth:`~SinkBase.played_s`, what the user heard), and
:meth:`~SinkBase.finished`, which returns once everything queued has gone out.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np

from ..services.base import AudioChunk


class Playback(Enum):
    STARTED = "started"
    """The first frame of a burst went out (audio was queued after the queue ran dry)."""
    DRY = "dry"
    """The queue ran dry: everything queued so far has been sent."""


@dataclass(frozen=True, slots=True)
class PlaybackReport:
    kind: Playback
    at: float
    """time.monotonic() of the frame that started the burst, or of the first empty take."""
    played_s: float
    """Seconds of audio sent since the last clear()."""


PlaybackListener = Callable[[PlaybackReport], None]


class SinkBase(ABC):
    """An audio output the pipeline writes to; the transports and the CLI each have one."""

    def __init__(self) -> None:
        self.on_playback: PlaybackListener | None = None
        """Called (synchronously, on the event loop) with each playback report."""
        self._played_s = 0.0
        self._burst_started_at: float | None = None
        self._drained = asyncio.Event()
        self._drained.set()
        self._paused = False

    @abstractmethod
    async def play(self, chunk: AudioChunk) -> None:
        """Queue audio. Returns quickly (a real-time sink may wait while ~2 s are queued)."""

    @abstractmethod
    def clear(self) -> None:
        """Drop everything queued, at once (barge-in). Resets played_s()."""

    @abstractmethod
    def queued_s(self) -> float:
        """Seconds of queued audio not yet sent to the listener."""

    @property
    def paused(self) -> bool:
        """Nothing goes out while paused; the queue keeps its audio (see :meth:`pause`)."""
        return self._paused

    def pause(self) -> None:
        """Stop sending at once but keep what is queued: the user spoke over the agent, and it
        may have been only an "uh huh". :meth:`resume` goes on from the same frame; clear()
        drops the audio and ends the pause. A sink that plays instantly cannot pause."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    @property
    def playback_started_at(self) -> float | None:
        """time.monotonic() at which the first frame of the current burst was sent; None while
        nothing plays."""
        return self._burst_started_at

    def played_s(self) -> float:
        """Seconds of audio sent to the listener since the last clear()."""
        return self._played_s

    async def finished(self) -> None:
        """Return once everything queued has been sent (or dropped: see subclasses)."""
        await self._drained.wait()

    # -- for subclasses ------------------------------------------------------------------------
    def _queued(self) -> None:
        self._drained.clear()

    def _sent(self, seconds: float, now: float) -> None:
        if self._burst_started_at is None:
            self._burst_started_at = now
            self._report(Playback.STARTED, now)
        self._played_s += seconds

    def _ran_dry(self, now: float) -> None:
        was_playing = self._burst_started_at is not None
        self._burst_started_at = None
        self._drained.set()
        if was_playing:
            self._report(Playback.DRY, now)

    def _reset(self) -> None:
        self._paused = False
        self._played_s = 0.0
        self._burst_started_at = None
        self._drained.set()

    def _report(self, kind: Playback, at: float) -> None:
        if self.on_playback is not None:
            self.on_playback(PlaybackReport(kind, at, self._played_s))


class BufferSink(SinkBase):
    """Collects audio in memory (CLI `talk`, tests). "Playback" is instant."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[AudioChunk] = []

    async def play(self, chunk: AudioChunk) -> None:
        self.chunks.append(chunk)
        # Instant playback: the burst starts at the first chunk and never runs dry.
        self._sent(chunk.duration_s, time.monotonic())

    def clear(self) -> None:
        self._reset()

    def queued_s(self) -> float:
        return 0.0

    def audio(self) -> tuple[np.ndarray, int]:
        """All audio so far as one int16 array and its sample rate."""
        if not self.chunks:
            return np.zeros(0, np.int16), 22050
        rate = self.chunks[0].sample_rate
        return np.concatenate([c.pcm for c in self.chunks]).astype(np.int16), rate


AudioSink = SinkBase
"""The name the pipeline uses for whatever sink it was given."""
