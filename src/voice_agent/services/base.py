"""Provider interfaces: streaming STT, streaming LLM, streaming TTS, and VAD.

Local and cloud providers implement the same small interfaces, so the pipeline never knows which
one it talks to. Audio into STT/VAD is float32 mono at 16 kHz in [-1, 1]; audio out of TTS is
int16 mono at the provider's own rate (the transport resamples).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np

# The shared message types live in core (the conversation history builds them); re-exported
# here so that ``from voice_agent.services.base import ChatMessage`` keeps working.
from voice_agent.core.messages import ChatMessage, LLMStreamItem, ToolCall
from voice_agent.services.stt_stream import (BufferedSTTStream, FinalCall, ResultSink,
                                             SpeechFailure, SpeechResult, STTStream)

__all__ = [
    "STT_SAMPLE_RATE", "AudioChunk", "BufferedSTTStream", "ChatMessage", "LLMService",
    "LLMStreamItem", "LoopLock", "STTService", "STTStream", "Service", "TTSService", "ToolCall",
    "SpeechFailure", "SpeechResult", "Transcript", "VAD", "VADFactory",
]

STT_SAMPLE_RATE = 16_000


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    final: bool
    no_speech_prob: float = 0.0
    """Whisper's probability that the audio held no speech (guards against hallucinations)."""
    alternatives: tuple[str, ...] = ()
    """Other hearings of the same audio, best first, each differing from ``text`` and from
    each other in words (``stt.alternatives``); empty when the provider has none."""


@dataclass(frozen=True, slots=True)
class AudioChunk:
    pcm: np.ndarray
    """int16 mono samples."""
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / self.sample_rate


class Service(ABC):
    """Common life cycle: load once (slow, may block: called in a thread), then warm up."""

    name: str = "service"

    @abstractmethod
    def load(self) -> None:
        """Load weights. Blocking; the caller runs it in a thread."""

    def warmup(self) -> None:
        """Run one tiny request so the first real one is fast. Blocking."""

    def close(self) -> None:
        """Free native resources."""


class LoopLock:
    """An asyncio.Lock made for whichever event loop uses it (a service outlives loops in tests
    and the CLI). Providers queue callers here, in the loop, where waiting is cancellable; a
    threading lock inside asyncio.to_thread would park executor threads instead, starving every
    other to_thread user, and run timed-out calls later anyway."""

    def __init__(self) -> None:
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop = asyncio.Lock(), loop
        return self._lock

    @property
    def locked(self) -> bool:
        return self._lock is not None and self._lock.locked()


class STTService(Service):
    sample_rate: int = STT_SAMPLE_RATE

    @property
    def busy(self) -> bool:
        """True while a transcription runs: interim transcripts are skipped then (under load
        they would only queue up behind each other); final ones always wait their turn."""
        return False

    @abstractmethod
    async def transcribe(self, audio: np.ndarray, *, final: bool = True) -> Transcript:
        """Transcribe float32 16 kHz mono audio. Must not block the event loop. ``final``:
        a turn may be made from this text: decode for accuracy (Whisper: beam search), not
        for speed as for the interims shown while the user speaks."""

    def create_stream(self, on_result: ResultSink, *,
                      final_call: FinalCall | None = None) -> STTStream:
        """A per-utterance stream that pushes its results to ``on_result``. Batch models
        re-transcribe the growing buffer for interims; ``final_call`` runs the final one."""
        return BufferedSTTStream(self, on_result, final_call=final_call)


class LLMService(Service):
    """``conversation`` (every call's optional keyword): which conversation the call belongs
    to, e.g. the session id, so that a provider serving several at once can keep each one's
    prompt cache (the local LLM keeps each on its own slot). None: callers that name none.
    A provider written before the keyword existed keeps working: the keyword is dropped
    before its methods see it (see ``__init_subclass__``)."""

    _CONVERSATION_METHODS = ("stream", "reserve", "prefill", "end_of_turn_probability")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls._CONVERSATION_METHODS:
            method = cls.__dict__.get(name)
            if callable(method) and not _takes_conversation(method):
                setattr(cls, name, _without_conversation(method))

    @abstractmethod
    def stream(
        self, messages: list[ChatMessage], *, max_tokens: int | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None, conversation: str | None = None,
    ) -> AsyncIterator[LLMStreamItem]:
        """Yield text pieces (``str``) as the model makes them.

        ``tools``: function definitions in OpenAI's format (``{"type": "function", "function":
        {"name", "description", "parameters"}}``), sent to the model as they are; None or empty
        sends none. Only when tools were passed MAY a provider also yield :class:`ToolCall`
        items, each complete (its arguments whole), after the reply's text. Without tools only
        ``str`` is yielded, so a caller that passes none may treat every item as text; one that
        passes tools skips or handles the non-``str`` items. A provider that cannot call tools
        raises a non-retryable ``ProviderError`` when given some, rather than ignoring them.

        Closing the iterator (``aclose()``, or cancelling the task consuming it) must stop the
        generation within 100 ms and free the model for the next caller.
        """

    continues_replies: bool = False
    """An assistant message last in ``messages`` is continued, not answered: a reply that
    stopped writing (pipeline/pace.py) can go on with its own words. False: never asked to."""

    @property
    def waiting(self) -> int:
        """Replies waiting for the model behind those it is serving (0: none waits now)."""
        return 0

    def reserve(self, *, conversation: str | None = None) -> AbstractAsyncContextManager[object]:
        """Wait for this caller's turn on the model (a free slot, for a provider that writes
        a few replies at once), first come first served, and hold it for one reply in
        ``conversation``. The wait is not the provider's time: callers start their timeouts
        inside. A provider that serves any number of calls at once needs no turns (the
        default)."""
        return contextlib.nullcontext()

    def prefill(self, messages: list[ChatMessage], *, conversation: str | None = None) -> bool:
        """Optionally start reading ``messages`` into the model's prompt cache in the background
        (no reply), so that a later :meth:`stream` whose prompt starts the same way has less
        left to read. Returns at once; False when nothing was started (busy, or unsupported)."""
        return False


def _takes_conversation(method: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):  # a builtin, or a callable that hides its signature
        return True
    return any(p.name == "conversation" or p.kind is p.VAR_KEYWORD for p in params)


def _without_conversation(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` taking (and dropping) ``conversation``; a coroutine function stays one,
    since callers check (the pipeline awaits an async end-of-turn scorer, threads a sync one)."""
    if inspect.iscoroutinefunction(method):
        @functools.wraps(method)
        async def drop_async(*args: Any, conversation: str | None = None, **kwargs: Any) -> Any:
            return await method(*args, **kwargs)
        return drop_async

    @functools.wraps(method)
    def drop(*args: Any, conversation: str | None = None, **kwargs: Any) -> Any:
        return method(*args, **kwargs)
    return drop


class TTSService(Service):
    sample_rate: int

    @abstractmethod
    def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        """Yield audio for ``text`` as soon as each piece is ready. Closing it stops synthesis."""


class VAD(ABC):
    """Per-session voice activity detector (it keeps recurrent state)."""

    frame_samples: int = 512
    """Samples per frame at 16 kHz that :meth:`speech_probability` expects (32 ms)."""

    @abstractmethod
    def speech_probability(self, frame: np.ndarray) -> float:
        """Probability in [0, 1] that this float32 frame holds speech. Fast (< 1 ms)."""

    @abstractmethod
    def reset(self) -> None: ...


class VADFactory(ABC):
    name: str = "vad"

    @abstractmethod
    def create(self) -> VAD: ...
