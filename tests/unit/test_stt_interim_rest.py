"""Interims rest in proportion to their cost: a long utterance's interims (Whisper's 30 s path)
took a core of their own, and one person talking non-stop slowed another session's replies ~7x."""

from __future__ import annotations

import asyncio

import numpy as np

from voice_agent.services.base import STTService, Transcript
from voice_agent.services.stt_stream import INTERIM_REST, BufferedSTTStream


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TimedSTT(STTService):
    """Each transcription takes ``cost_s`` on the fake clock."""

    name = "timed"

    def __init__(self, clock: Clock, cost_s: float) -> None:
        self.clock, self.cost_s, self.calls = clock, cost_s, 0

    def load(self) -> None:
        pass

    async def transcribe(self, audio: np.ndarray, *, final: bool = True) -> Transcript:
        self.calls += 1
        await asyncio.sleep(0)
        self.clock.now += self.cost_s
        return Transcript("words", final)


async def _interims(cost_s: float, every_s: float, seconds: float) -> tuple[int, int]:
    """(transcriptions made, interims asked for)."""
    clock = Clock()
    stt = TimedSTT(clock, cost_s)
    stream = BufferedSTTStream(stt, lambda _r: None, clock=clock)
    asked = 0
    while clock.now < seconds:
        asked += 1
        stream.feed(np.zeros(1600, np.float32))
        stream.request_interim()
        for _ in range(3):  # let a started interim run
            await asyncio.sleep(0)
        clock.now += every_s
    await stream.aclose()
    return stt.calls, asked


async def test_short_interims_are_not_held_back() -> None:
    # 170 ms each (the 10 s window) at the 500 ms interval: every request is served.
    calls, asked = await _interims(0.17, 0.5, 10.0)
    assert calls == asked > 10


async def test_long_interims_take_at_most_a_third_of_the_time() -> None:
    calls, asked = await _interims(0.7, 0.5, 30.0)
    assert calls < asked
    busy = calls * 0.7
    assert busy <= 30.0 / (1 + INTERIM_REST) + 0.7, (calls, busy)
    assert calls >= 5  # still some: the transcript shown keeps up
