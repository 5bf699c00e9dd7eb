"""Provider interfaces: streaming STT, streaming LLM, streaming TTS, and VAD.

Local and cloud providers implement the same small interfaces, so the pipeline never knows which
one it talks to. Audio into STT/VAD is float32 mono at 16 kHz in [-1, 1]; audio out of TTS is
int16 mono at the provider's own rate (the transport resamples).
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np

# The shared message types live in core (the conversation history builds them); re-exported
# here so that ``from voice_agent.services.base import ChatMessage`` keeps working.
from voice_agent.core.messages import ChatMessage, LLMStreamItem, ToolCall

__all__ = [
    "STT_SAMPLE_RATE", "AudioChunk", "BufferedSTTStream", "ChatMessage", "LLMService",
    "LLMStreamItem", "LoopLock", "STTService", "STTStream", "Service", "TTSService", "ToolCall",
    "Transcript", "VAD", "VADFactory",
]

STT_SAMPLE_RATE = 16_000


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    final: bool
    no_speech_prob: float = 0.0
    """Whisper's probability that the audio held no speech (guards against hallucinations)."""


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
        """Transcribe float32 16 kHz mono audio. Must not block the event loop."""

    def create_stream(self) -> STTStream:
        """A per-utterance stream. Batch models re-transcribe the growing buffer for interims."""
        return BufferedSTTStream(self)


class STTStream(ABC):
    """Feed audio as it arrives; ask for interim text now and then; finish for the final text."""

    @abstractmethod
    def feed(self, audio: np.ndarray) -> None: ...

    @abstractmethod
    async def interim(self) -> Transcript | None:
        """Text so far, or None when nothing new was fed since the last interim."""

    @abstractmethod
    async def finish(self) -> Transcript:
        """The final transcript of everything fed."""

    @property
    @abstractmethod
    def duration_s(self) -> float: ...


class BufferedSTTStream(STTStream):
    def __init__(self, stt: STTService) -> None:
        self._stt = stt
        self._chunks: list[np.ndarray] = []
        self._samples = 0
        self._at_last_interim = 0

    def feed(self, audio: np.ndarray) -> None:
        self._chunks.append(np.asarray(audio, dtype=np.float32))
        self._samples += len(audio)

    def _audio(self) -> np.ndarray:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros(0, np.float32)

    async def interim(self) -> Transcript | None:
        if self._samples == self._at_last_interim:
            return None
        self._at_last_interim = self._samples
        return await self._stt.transcribe(self._audio(), final=False)

    async def finish(self) -> Transcript:
        return await self._stt.transcribe(self._audio(), final=True)

    @property
    def duration_s(self) -> float:
        return self._samples / self._stt.sample_rate


class LLMService(Service):
    @abstractmethod
    def stream(
        self, messages: list[ChatMessage], *, max_tokens: int | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
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

    @property
    def waiting(self) -> int:
        """Replies waiting for the model behind the one it is serving (0: not shared now)."""
        return 0

    def reserve(self) -> AbstractAsyncContextManager[object]:
        """Wait for this caller's turn on the model, first come first served, and hold it for
        one reply. The wait is not the provider's time: callers start their timeouts inside.
        A provider that serves many calls at once needs no turns (the default)."""
        return contextlib.nullcontext()

    def prefill(self, messages: list[ChatMessage]) -> bool:
        """Optionally start reading ``messages`` into the model's prompt cache in the background
        (no reply), so that a later :meth:`stream` whose prompt starts the same way has less
        left to read. Returns at once; False when nothing was started (busy, or unsupported)."""
        return False


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
