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


class Recording(STTService):
    """Records whether each transcription was asked for accuracy; ``gate`` holds them."""

    name = "recording"

    def __init__(self) -> None:
        self.calls: list[bool] = []
        self.gate: asyncio.Event | None = None

    def load(self) -> None:
        pass

    async def transcribe(self, audio: np.ndarray, *, final: bool = True) -> Transcript:
        self.calls.append(final)
        if self.gate is not None:
            await self.gate.wait()
        return Transcript(f"{len(audio)}", final)


async def _until(predicate, what: str) -> None:  # noqa: ANN001
    async with asyncio.timeout(2):
        while not predicate():
            await asyncio.sleep(0)


async def test_a_decisive_interim_is_decoded_for_accuracy_and_follows_a_cheap_one() -> None:
    """Greedy decoding misheard words that beam search got right: the transcript a reply is
    made from (the one at a pause) is decoded like a final, the ones shown while speaking are
    not."""
    stt, results = Recording(), []
    stream = BufferedSTTStream(stt, results.append)
    stream.feed(np.zeros(1600, np.float32))
    stt.gate = asyncio.Event()
    stream.request_interim()  # a cheap one, on the timer
    await _until(lambda: stt.calls, "the cheap interim")
    stream.request_interim(decisive=True)  # the pause: asked while the cheap one runs
    stt.gate.set()
    await _until(lambda: len(results) == 2, "both interims")
    assert stt.calls == [False, True] and [r.decisive for r in results] == [False, True]
    stream.finalize(0.1)  # the decisive one covers everything: it is the final
    await _until(lambda: len(results) == 3, "the final")
    assert results[-1].final and results[-1].reused and stt.calls == [False, True]
    await stream.aclose()


async def test_a_cheap_interim_is_never_taken_as_the_final() -> None:
    stt, results = Recording(), []
    stream = BufferedSTTStream(stt, results.append)
    stream.feed(np.zeros(1600, np.float32))
    stream.request_interim()
    await _until(lambda: results, "the interim")
    stream.finalize(0.1)  # covered, but greedy: decoded again, for accuracy
    await _until(lambda: len(results) == 2, "the final")
    assert stt.calls == [False, True] and not results[-1].reused
    await stream.aclose()
