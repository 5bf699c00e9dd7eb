"""Fake providers and a fake sink for turn-taking tests without models.

- Speech is synthetic: :func:`speech` makes each word a burst of constant level that encodes the
  word, so :class:`FakeSTT` "hears" exactly the words whose audio it was given, in order, and an
  interim made from half an utterance holds half its words. :class:`FakeVAD` calls a frame
  speech when it is loud.
- :class:`FakeLLM` streams a scripted reply per call, with holds and failures on cue;
  :class:`FakeTTS` makes 0.1 s of tone per word; both are plain async generators, cancellable
  like the real ones.
- :class:`FakeSink` is the real frame queue (the same backpressure, the same clear/cancel
  behaviour) whose playback advances only when the test says so: the playback clock is fake.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voice_agent.core.errors import ProviderError
from voice_agent.services.base import (VAD, AudioChunk, ChatMessage, LLMService, STTService,
                                       Transcript, TTSService, VADFactory)
from voice_agent.services.factory import Services
from voice_agent.transport.audio_out import FrameQueue

RATE = 16_000
FRAME = 512  # the VAD's frame: 32 ms
WORD_FRAMES = 6  # ~190 ms per word
GAP_FRAMES = 2
_VOCAB: dict[str, int] = {}
_WORDS: dict[int, str] = {}


def _level(word: str) -> float:
    if word not in _VOCAB:
        idx = len(_VOCAB) + 1
        _VOCAB[word], _WORDS[idx] = idx, word
    return (200 + _VOCAB[word]) / 1000  # 0.201, 0.202, ...: loud, and one level per word


def speech(text: str) -> np.ndarray:
    """Audio that FakeSTT hears as ``text`` (words separated by short gaps, no silence after)."""
    parts: list[np.ndarray] = []
    for word in text.split():
        parts.append(np.full(WORD_FRAMES * FRAME, _level(word), np.float32))
        parts.append(np.zeros(GAP_FRAMES * FRAME, np.float32))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def silence(ms: float) -> np.ndarray:
    return np.zeros(int(RATE * ms / 1000), np.float32)


def hear(audio: np.ndarray) -> str:
    """What FakeSTT makes of ``audio``: one word per run of frames at one word's level."""
    words: list[str] = []
    last = 0
    for i in range(0, len(audio) - FRAME + 1, FRAME):
        level = float(np.abs(audio[i:i + FRAME]).max())
        idx = round(level * 1000) - 200 if level > 0.15 else 0
        if idx and idx != last and idx in _WORDS:
            words.append(_WORDS[idx])
        last = idx
    return " ".join(words)


class FakeVAD(VAD):
    frame_samples = FRAME

    def speech_probability(self, frame: np.ndarray) -> float:
        return 1.0 if float(np.abs(frame).max()) > 0.1 else 0.0

    def reset(self) -> None:
        pass


class FakeVADFactory(VADFactory):
    name = "fake-vad"

    def create(self) -> VAD:
        return FakeVAD()


class FakeSTT(STTService):
    name = "fake-stt"

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.hold: asyncio.Event | None = None
        """While set to an unset Event, transcriptions wait for it."""
        self.fail: list[bool] = []
        """Per coming call: True raises ProviderError (popped from the front)."""
        self.running = 0
        self.hearings: dict[str, tuple[str, ...]] = {}
        """Other hearings of a text, returned with it by accurate (``final``) decodes only,
        as Whisper's beam gives them."""

    def load(self) -> None:
        pass

    @property
    def busy(self) -> bool:
        return self.running > 0

    async def transcribe(self, audio: np.ndarray, *, final: bool = True) -> Transcript:
        self.running += 1
        try:
            if self.hold is not None:
                await self.hold.wait()
            await asyncio.sleep(0)
            text = hear(audio)
            self.calls.append((text, final))
            if self.fail and self.fail.pop(0):
                raise ProviderError(self.name, "scripted failure")
            return Transcript(text, final,
                              alternatives=self.hearings.get(text, ()) if final else ())
        finally:
            self.running -= 1


@dataclass
class Script:
    """One reply of the fake LLM: its tokens, and what goes wrong."""

    tokens: list[str]
    fail_after: int | None = None
    """Raise ProviderError after this many tokens (0: before the first)."""
    hold_after: int | None = None
    """Wait for ``FakeLLM.release`` after this many tokens."""
    ignore_cancel: bool = False
    """Swallow cancellation (a misbehaving provider) and keep going."""


def words(text: str) -> list[str]:
    """Tokens of a reply: one per word, each with its leading space."""
    return [w if i == 0 else f" {w}" for i, w in enumerate(text.split())]


@dataclass
class FakeLLM(LLMService):
    name: str = "fake-llm"
    scripts: list[Script] = field(default_factory=list)
    """Replies in order; when empty, the reply is ``default(last user message)``."""
    default: Callable[[str], str] = lambda q: f"You asked: {q}."
    calls: list[list[ChatMessage]] = field(default_factory=list)
    prefills: list[list[ChatMessage]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    active: int = 0
    end_of_turn: Callable[[str], float | None] | None = None
    """The end-of-turn score of the last user message's words (None: the model cannot tell)."""
    scored: list[str] = field(default_factory=list)
    score_hold: asyncio.Event | None = None
    """While set to an unset Event, scores wait for it."""

    statement_checks: list[float | None] = field(default_factory=list)
    """The ``statement_check_p`` of each score asked for."""
    able_to_score: bool | None = None
    """Whether its None means a busy model that gave way (True) or a provider that cannot
    score (False); None: True once a test gives it ``end_of_turn``."""

    @property
    def scores_turns(self) -> bool:
        return self.end_of_turn is not None if self.able_to_score is None else self.able_to_score

    @scores_turns.setter
    def scores_turns(self, value: bool) -> None:
        self.able_to_score = value

    async def end_of_turn_probability(self, messages: list[ChatMessage], *,
                                      statement_check_p: float | None = None) -> float | None:
        """Async, so that no thread makes the turn tests' order depend on the machine."""
        await asyncio.sleep(0)
        if self.score_hold is not None:
            await self.score_hold.wait()
        self.scored.append(messages[-1].content)
        self.statement_checks.append(statement_check_p)
        return self.end_of_turn(messages[-1].content) if self.end_of_turn else None

    def load(self) -> None:
        pass

    def prefill(self, messages: list[ChatMessage]) -> bool:
        self.prefills.append(messages)
        return True

    async def stream(self, messages: list[ChatMessage], *, max_tokens: int | None = None,
                     tools: Sequence[Mapping[str, Any]] | None = None) -> AsyncIterator[str]:
        self.calls.append(messages)
        script = self.scripts.pop(0) if self.scripts else Script(words(
            self.default(messages[-1].content)))
        self.active += 1
        try:
            for i, token in enumerate(script.tokens):
                if script.fail_after == i:
                    raise ProviderError(self.name, "scripted failure")
                if script.hold_after == i:
                    await self._wait(script)
                await self._step(script)
                yield token
            if script.fail_after is not None and script.fail_after >= len(script.tokens):
                raise ProviderError(self.name, "scripted failure")
        finally:
            self.active -= 1

    async def _wait(self, script: Script) -> None:
        while True:
            try:
                await self.release.wait()
                return
            except asyncio.CancelledError:
                if not script.ignore_cancel:
                    raise

    async def _step(self, script: Script) -> None:
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            if not script.ignore_cancel:
                raise


class FakeTTS(TTSService):
    name = "fake-tts"
    sample_rate = RATE
    WORD_S = 0.1

    def __init__(self) -> None:
        self.spoken: list[str] = []
        self.hold: asyncio.Event | None = None
        self.fail: list[bool] = []

    def load(self) -> None:
        pass

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        if self.hold is not None:
            await self.hold.wait()
        await asyncio.sleep(0)
        if self.fail and self.fail.pop(0):
            raise ProviderError(self.name, "scripted failure")
        self.spoken.append(text)
        n = int(self.WORD_S * RATE) * max(1, len(text.split()))
        t = np.arange(n) / RATE
        yield AudioChunk((8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16), RATE)


class FakeSink(FrameQueue):
    """The real frame queue; its listener is the test, which advances playback by hand."""

    def __init__(self) -> None:
        super().__init__(rate=RATE)

    def consumer_gone(self) -> bool:
        return False  # the fake listener never goes away, however long the test waits

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of audio (or silence) go out to the listener."""
        for _ in range(round(seconds / 0.02)):
            self.take()

    def play_out(self) -> None:
        """Send everything queued (and notice that the queue ran dry)."""
        while self.take() is not None:
            pass


def fake_services() -> Services:
    return Services(stt=FakeSTT(), llm=FakeLLM(), tts=FakeTTS(), vad=FakeVADFactory())
