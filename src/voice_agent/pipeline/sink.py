"""Where the agent's voice goes: a transport's outgoing track, or a buffer for the CLI."""

from __future__ import annotations

import time
from typing import Protocol

import numpy as np

from ..services.base import AudioChunk


class AudioSink(Protocol):
    """An audio output the pipeline writes to. Implemented by every transport."""

    async def play(self, chunk: AudioChunk) -> None:
        """Queue audio for playback. Returns quickly (may wait while over ~2 s is queued)."""

    def clear(self) -> None:
        """Drop everything queued at once (barge-in)."""

    def queued_s(self) -> float:
        """Seconds of queued audio not yet sent to the listener."""

    @property
    def playback_started_at(self) -> float | None:
        """time.monotonic() at which the first frame of the current burst was sent, or None
        if nothing is playing; a burst starts when audio is queued after the queue ran dry."""


class BufferSink:
    """Collects audio in memory (CLI `talk`, tests). "Playback" is instant."""

    def __init__(self) -> None:
        self.chunks: list[AudioChunk] = []
        self._started: float | None = None

    async def play(self, chunk: AudioChunk) -> None:
        if self._started is None:
            self._started = time.monotonic()
        self.chunks.append(chunk)

    def clear(self) -> None:
        self._started = None

    def queued_s(self) -> float:
        return 0.0

    @property
    def playback_started_at(self) -> float | None:
        return self._started

    def audio(self) -> tuple[np.ndarray, int]:
        """All audio so far as one int16 array and its sample rate."""
        if not self.chunks:
            return np.zeros(0, np.int16), 22050
        rate = self.chunks[0].sample_rate
        return np.concatenate([c.pcm for c in self.chunks]).astype(np.int16), rate
