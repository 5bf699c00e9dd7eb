"""A reply's LLM stops for its first piece's audio and resumes from its own words (real models)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager

import pytest

from voice_agent.core.config import V3Config
from voice_agent.core.recovery import recovery_from_config
from voice_agent.pipeline.metrics import TurnMetrics
from voice_agent.pipeline.reply import ReplySpeaker, ReplyState
from voice_agent.pipeline.sink import BufferSink
from voice_agent.services.base import AudioChunk, ChatMessage, LLMService, TTSService
from voice_agent.services.llm_llamacpp import LlamaCppLLM
from voice_agent.services.tts_piper import PiperTTS

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def config() -> V3Config:
    return V3Config(ai={"temperature": 0.0})  # greedy: the same prompt gives the same words


@pytest.fixture(scope="module")
def llm(config: V3Config) -> Iterator[LlamaCppLLM]:
    service = LlamaCppLLM(config)
    service.load()
    service.warmup()
    yield service
    service.close()


@pytest.fixture(scope="module")
def tts(config: V3Config) -> Iterator[PiperTTS]:
    service = PiperTTS(config)
    service.load()
    yield service
    service.close()


class SpyLLM(LLMService):
    """The real LLM, with a log of when each call started and what it was asked."""

    name = "llamacpp"

    def __init__(self, llm: LlamaCppLLM) -> None:
        self.llm = llm
        self.continues_reply = llm.continues_reply
        self.calls: list[tuple[float, list[ChatMessage]]] = []

    def load(self) -> None:
        raise AssertionError("already loaded")

    def stream(self, messages: list[ChatMessage], *, max_tokens: int | None = None) -> AsyncIterator[str]:
        self.calls.append((time.monotonic(), list(messages)))
        return self.llm.stream(messages, max_tokens=max_tokens)

    def reserve(self) -> AbstractAsyncContextManager[object]:
        return self.llm.reserve()

    async def settle(self) -> None:
        await self.llm.settle()


class SpyTTS(TTSService):
    """The real TTS, noting when its first audio came out."""

    name = "piper"

    def __init__(self, tts: PiperTTS) -> None:
        self.tts = tts
        self.sample_rate = tts.sample_rate
        self.first_audio_at: float | None = None

    def load(self) -> None:
        raise AssertionError("already loaded")

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        async for chunk in self.tts.synthesize(text):
            if self.first_audio_at is None:
                self.first_audio_at = time.monotonic()
            yield chunk


async def speak(llm: LlamaCppLLM, tts: PiperTTS, config: V3Config, question: str, *,
                pause: bool) -> tuple[ReplyState, SpyLLM, SpyTTS, BufferSink]:
    spy_llm, spy_tts, sink = SpyLLM(llm), SpyTTS(tts), BufferSink()

    async def emit(_event: object) -> None:
        return None

    async def nothing() -> None:
        return None

    speaker = ReplySpeaker(spy_llm, spy_tts, sink, emit, recovery_from_config(config.recovery),
                           max_tokens=60, timeout_s=30, first_piece_max_words=4,
                           pause_for_first_audio=pause)
    messages = [ChatMessage("system", config.ai.system_prompt), ChatMessage("user", question)]
    state, gate = ReplyState(), asyncio.Event()
    gate.set()
    await asyncio.wait_for(speaker.run(messages, state, TurnMetrics(turn=1),
                                       on_first_audio=nothing, gate=gate), 60)
    return state, spy_llm, spy_tts, sink


QUESTION = "Why do leaves change colour in autumn? Answer in two sentences."


async def test_paused_reply_says_the_same_words(llm: LlamaCppLLM, tts: PiperTTS,
                                               config: V3Config) -> None:
    straight, plain_llm, _, _ = await speak(llm, tts, config, QUESTION, pause=False)
    paused, spy, voice, sink = await speak(llm, tts, config, QUESTION, pause=True)
    assert len(plain_llm.calls) == 1
    # Two calls: the first stopped after the first piece, the second carried on from it.
    assert len(spy.calls) == 2, [m[-1].content for _, m in spy.calls]
    resumed_at, resumed = spy.calls[1]
    first_piece = paused.pieces[0].text
    # It resumed from everything generated so far: the first piece and the word that ended it.
    assert resumed[-1].role == "assistant"
    assert resumed[-1].content.startswith(first_piece) and paused.text.startswith(resumed[-1].content)
    # The model waited for the first piece's audio before it went on.
    assert voice.first_audio_at is not None and resumed_at >= voice.first_audio_at
    # Greedy decoding: the reply is word for word what it is without the pause.
    assert paused.text.split() == straight.text.split(), (paused.text, straight.text)
    assert len(paused.pieces) >= 2 and sink.audio()[0].size > 0


async def test_a_reply_that_ends_in_its_first_piece_is_not_resumed(llm: LlamaCppLLM, tts: PiperTTS,
                                                                  config: V3Config) -> None:
    state, spy, _, _ = await speak(llm, tts, config, "Say just the word yes.", pause=True)
    assert "yes" in state.text.lower()
    assert len(spy.calls) <= 2 and state.text.strip()
    if len(spy.calls) == 2:  # stopped after "Yes." and resumed: the model had nothing more
        assert spy.calls[1][1][-1].role == "assistant"
