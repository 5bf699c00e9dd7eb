"""The turn-taking suite's harness: :class:`~tests.helpers.turns.Harness` plus what the user
heard, and the moves a test makes over and over (a barge-in, waiting for a held reply).

Audio is measured, not guessed: FakeTTS makes 0.1 s per word, so a reply of n words is n/10 s
of audio, and :class:`Ear` adds up every chunk that reached the sink. A test that gives the old
and the new reply different lengths can tell whose audio the user got.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tests.helpers.fakes import FakeSink, FakeTTS, Script, silence, speech, words
from tests.helpers.turns import END_SILENCE_MS, Harness
from voice_agent.core.events import ResponseEvent
from voice_agent.pipeline.turn_events import InterimTick
from voice_agent.services.base import AudioChunk

LONG_REPLY = " ".join(" ".join(f"w{i}" for i in range(s, s + 10)) + "." for s in (1, 11, 21, 31))
"""40 words, 4 s of audio: more than a FrameQueue holds (2 s), so play() waits for room."""
EIGHT = "one two three four five six seven eight"
"""Spoken as the pieces 'one two three' (0-0.3 s), 'four five' (0.3-0.5 s) and 'six seven
eight' (0.5-0.8 s)."""


def answer(question: str) -> str:
    """FakeLLM's reply when no script is queued."""
    return f"You asked: {question}."


def audio_s(text: str) -> float:
    """Seconds of audio FakeTTS makes of ``text``."""
    return round(FakeTTS.WORD_S * len(text.split()), 3)


class Ear:
    """Adds up the audio the agent put into the sink: what the user gets to hear."""

    def __init__(self, sink: FakeSink) -> None:
        self.chunks: list[float] = []
        inner = sink._push

        def push(chunk: AudioChunk) -> None:
            self.chunks.append(chunk.duration_s)
            inner(chunk)

        sink._push = push  # type: ignore[method-assign]

    def mark(self) -> int:
        return len(self.chunks)

    def total_s(self, since: int = 0) -> float:
        return round(sum(self.chunks[since:]), 3)


class Turns(Harness):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ear = Ear(self.sink)

    def script(self, text: str, **how: Any) -> None:
        """The next LLM call replies ``text`` (one token per word), held or failing as told."""
        self.llm.scripts.append(Script(words(text), **how))

    async def __aexit__(self, *exc: object) -> None:
        # A reply told to ignore its cancellation would otherwise wait on this forever, and
        # the session's event loop outlives the test.
        self.llm.release.set()
        if self.tts.hold is not None:
            self.tts.hold.set()
        if self.stt.hold is not None:
            self.stt.hold.set()
        await super().__aexit__(*exc)

    async def barge_in(self, text: str, *, end: bool = True) -> int:
        """Speak over the agent. Checks that the sink is empty as soon as the speech is heard
        (its first word), and stays so until the turn ends. Returns the Ear's mark there."""
        first, *rest = text.split()
        await self.push(speech(first))
        # Silent at once: the reply is paused (it goes on if this was only an "uh huh") or,
        # with no backchannels configured, cut.
        assert self.sink.paused or self.sink.queued_s() == 0, \
            "the old reply is still playing after the barge-in"
        mark = self.ear.mark()
        await self.push(speech(" ".join(rest)))
        await self.settle()
        assert self.ear.total_s(mark) == 0, "the old reply's audio came after the barge-in"
        if end:
            await self.push(silence(END_SILENCE_MS))
            await self.quiet_until_the_turn_ends()
        return mark

    async def quiet(self, ms: float) -> None:
        """Silence as a microphone sends it: frame by frame, the transcript and its score
        arriving in between (pushed at once, all of it would be read before either came). The
        next frame waits for a score on its way, so that the outcome does not depend on how
        fast the machine runs the scorer."""
        for _ in range(round(ms / 32)):
            await self.push(silence(32))
            await self.settle()
            await self.until(lambda: self.pipeline.coordinator._scoring is None,
                             "the pause's score")

    async def interim(self) -> None:
        """An interim now (the timer's tick), and its end-of-turn score if one is asked."""
        self.pipeline._post(InterimTick())
        await self.settle()
        await self.until(lambda: self.pipeline.coordinator.verdicts.pending is None,
                         "the interim's score")
        await self.settle()

    async def until_written(self, text: str) -> None:
        """The whole reply ``text`` is in the sink (none of it played yet, unless advanced)."""
        await self.until(lambda: self.ear.total_s() >= audio_s(text), f"all of {text!r} queued")
        await self.settle()

    async def until_held(self) -> None:
        """A reply was prepared during the pause and its first audio waits at the gate."""
        await self.until(lambda: self.llm.calls and self.tts.spoken, "a held reply's audio")
        await self.settle()

    async def step_until(self, predicate: Callable[[], object], what: str) -> None:
        """Run the event loop one turn at a time until ``predicate`` holds: to act between two
        steps of the pipeline (a task has ended, the event it posted is not handled yet)."""
        for _ in range(100):
            if predicate():
                return
            await asyncio.sleep(0)
        raise AssertionError(f"{what} never happened")

    def answers(self) -> list[str]:
        """Replies heard to the end (not interrupted)."""
        return [r.text for r in self.replies() if not r.interrupted]

    def cut(self) -> list[ResponseEvent]:
        return [r for r in self.replies() if r.interrupted]

    def shown(self) -> list[str]:
        """Every reply text the client was shown, interim or final."""
        return [e.text for e in self.of(ResponseEvent)]
