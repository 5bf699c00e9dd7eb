"""Inbound audio at real time: a client may not send speech faster than it could be spoken.

Why: on ``/ws/v3/audio`` audio frames are the client's own clock. 60 s of speech sent in 1.5 s
(a probe did this) made the server run VAD and Whisper ~40x faster than real time for that one
session, ~190% CPU on 2 cores for 7 s, and the other sessions' replies went from ~0.9 s to
13 s (``voice-agent bench flood``). A microphone never sends faster than real time, so the
transport reads no faster: :class:`RealTimePacer` lets a client run up to ``burst_s`` ahead
(a network hiccup's backlog), then the read waits, and TCP slows the sender down. Nothing is
dropped or refused, so a client that uploads a recording still gets every word heard.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

BURST_S = 2.0
"""Audio a client may send ahead of real time before its reads are paced."""


class RealTimePacer:
    """A token bucket measured in seconds of audio, refilled at ``speed`` seconds per second."""

    def __init__(self, burst_s: float = BURST_S, *, speed: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.burst_s, self.speed = burst_s, speed
        self._clock, self._sleep = clock, sleep
        self._due: float | None = None
        """When the audio taken so far will have been spoken, at real time."""
        self.paced_s = 0.0
        """Seconds the reads were held back, in all."""

    def ahead_s(self) -> float:
        """How far the audio taken so far runs ahead of real time."""
        return 0.0 if self._due is None else max(0.0, self._due - self._clock())

    async def take(self, seconds: float) -> float:
        """Account for ``seconds`` of audio; wait while the client is more than ``burst_s``
        ahead. Returns how long it waited."""
        now = self._clock()
        self._due = max(self._due or now, now) + seconds / self.speed
        wait = self._due - now - self.burst_s
        if wait <= 0:
            return 0.0
        self.paced_s += wait
        await self._sleep(wait)
        return wait
