"""Speech-to-text streams that *push* their results, whatever the provider.

A stream lives for one utterance. The pipeline feeds it audio as it arrives, may ask for an
interim result now and then, and says when the utterance ended; the stream answers through its
``on_result`` callback with :class:`SpeechResult` (text plus the span of audio it covers) or
:class:`SpeechFailure`. So a streaming provider (Deepgram-style: its own interims, its own
endpointing, a ``Finalize`` at the end) and a batch one (Whisper, re-transcribing the growing
buffer) plug in the same way; :class:`BufferedSTTStream` is the batch one.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.errors import ProviderError
from ..core.tasks import TaskSet

if TYPE_CHECKING:
    from .base import STTService

INTERIM_REST = 2.0
"""After an interim, none starts for this many times as long as it took: at most a third of a
core per talking session goes to interims. A short utterance's interim (~170 ms, the 10 s
window) is not held back at the 500 ms interval; past the window each one takes Whisper's 30 s
path (600 ms and more), and one person talking non-stop made another session's replies start
~7x later (``voice-agent bench flood``, talker at real time)."""

@dataclass(frozen=True, slots=True)
class SpeechResult:
    text: str
    final: bool
    start_s: float
    """Start of the audio this covers, in seconds from the stream's first sample."""
    end_s: float
    """End of the audio this covers: speech after it is not in ``text``."""
    reused: bool = False
    """A final result that is an earlier interim, which already covered all the speech."""
    decisive: bool = False
    """Decoded for accuracy (a final, or an interim asked for as decisive)."""
    alternatives: tuple[str, ...] = ()
    """The provider's other hearings of the same audio (Transcript.alternatives)."""


@dataclass(frozen=True, slots=True)
class SpeechFailure:
    error: ProviderError
    final: bool
    """The final transcript failed (the turn cannot be answered), not just an interim."""


ResultSink = Callable[[SpeechResult | SpeechFailure], None]
FinalCall = Callable[[Callable[[], Awaitable["SpeechResult"]]], Awaitable["SpeechResult"]]
"""Runs the final transcription (the pipeline wraps it in retries, breaker and timeout)."""


class STTStream(ABC):
    """One utterance: feed audio, ask for interims, finalize; results come to ``on_result``."""

    def __init__(self, on_result: ResultSink, sample_rate: int) -> None:
        self.on_result = on_result
        self.sample_rate = sample_rate
        self._samples = 0

    @property
    def duration_s(self) -> float:
        """Seconds of audio fed so far."""
        return self._samples / self.sample_rate

    @abstractmethod
    def feed(self, audio: np.ndarray) -> None:
        """Float32 16 kHz mono audio, as it arrives. Never blocks."""

    @abstractmethod
    def request_interim(self, *, decisive: bool = False) -> None:
        """Ask for text so far. A streaming provider that sends interims itself ignores it.
        ``decisive``: the text may become the turn's (a reply is prepared from it at a pause):
        decode it for accuracy, as the final."""

    def withdraw(self) -> None:
        """The decisive interim asked for at a pause is no longer needed (the user went on):
        drop it if the provider has not started on it. A streaming provider does nothing."""

    @abstractmethod
    def finalize(self, speech_end_s: float) -> None:
        """The utterance ended (audio after ``speech_end_s`` is silence): push the final."""

    @abstractmethod
    async def aclose(self) -> None:
        """Stop; no result is pushed afterwards. Bounded: returns within ~1 s."""


class BufferedSTTStream(STTStream):
    """A batch model behind the stream interface: each interim re-transcribes the buffer.

    One transcription at a time: an interim asked for while one runs is dropped (the caller
    asks again if the one running does not cover what it needs). The final reuses the last interim when that already covered all
    the speech, which saves a whole transcription at the end of the turn.
    """

    def __init__(self, stt: STTService, on_result: ResultSink, *,
                 final_call: FinalCall | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(on_result, stt.sample_rate)
        self._stt = stt
        self._final_call = final_call
        self._chunks: list[np.ndarray] = []
        self._running: asyncio.Task[None] | None = None
        self._latest: SpeechResult | None = None
        self._at_last_interim = 0
        self._clock = clock
        self._rest_until = 0.0
        """No interim starts before this: a long utterance's interims are costly."""
        self._deferred: asyncio.Task[None] | None = None
        self._running_decisive = False
        self._want_decisive = False
        """A decisive interim was asked for while a cheap one ran: it runs next."""
        """The interim asked for during a rest, started when the rest is over."""
        self._tasks = TaskSet("stt stream")
        self._finalized = False
        self._closed = False

    def feed(self, audio: np.ndarray) -> None:
        if self._finalized:
            return
        self._chunks.append(np.asarray(audio, dtype=np.float32).reshape(-1))
        self._samples += len(self._chunks[-1])

    def _audio(self) -> np.ndarray:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros(0, np.float32)

    def request_interim(self, *, decisive: bool = False) -> None:
        if self._closed or self._finalized:
            return
        if self._running is not None and not self._running.done():
            # Not queued: a second transcription right after this one fought the reply just
            # started from it for the 2 cores (first LLM token ~390 -> ~715 ms, A/B). If this
            # one does not cover the speech, the coordinator asks again when it arrives. A
            # decisive one asked for while a cheap one runs follows it (its text would be
            # the turn's otherwise).
            self._want_decisive |= decisive and not self._running_decisive
            return
        latest = self._latest
        if self._samples == self._at_last_interim and (
                not decisive or (latest is not None and latest.decisive)):
            return  # nothing new since the last one
        rest = self._rest_until - self._clock()
        if rest > 0 and not decisive:  # resting after a costly one (see INTERIM_REST)
            if self._deferred is None or self._deferred.done():
                self._deferred = self._spawn(self._after_rest(rest))
            return
        self._running_decisive = decisive
        self._running = self._spawn(self._interim(decisive))

    def withdraw(self) -> None:
        """Cancel the decisive interim still on its way: one waiting for the model (behind
        other sessions' transcripts) leaves the queue and costs nothing; one the model has
        started on finishes in its thread, its words unread (Whisper skips its decoder when
        the cancel comes while it encodes: services/batch_queue.py's ``wanted``)."""
        running = self._running
        if running is None or running.done() or not self._running_decisive or self._finalized:
            return
        running.cancel()

    async def _after_rest(self, rest_s: float) -> None:
        await asyncio.sleep(rest_s)
        self.request_interim()

    async def _interim(self, decisive: bool) -> None:
        self._at_last_interim = covers = self._samples
        started = self._clock()
        try:
            # ``final`` asks the provider for its accurate decoding (Whisper: beam search).
            transcript = await self._stt.transcribe(self._audio()[:covers], final=decisive)
        except ProviderError as exc:
            self._push(SpeechFailure(exc, final=False))
        else:
            self._latest = SpeechResult(transcript.text, False, 0.0, covers / self.sample_rate,
                                        decisive=decisive,
                                        alternatives=transcript.alternatives)
            self._push(self._latest)
        finally:
            if not decisive:  # a decisive one is asked for at a pause, not on a timer
                self._rest_until = self._clock() + INTERIM_REST * (self._clock() - started)
            if self._want_decisive and not decisive and not (self._closed or self._finalized):
                self._want_decisive = False
                self._running_decisive = True
                self._running = self._spawn(self._interim(True))

    def finalize(self, speech_end_s: float) -> None:
        if self._closed or self._finalized:
            return
        self._finalized = True
        self._spawn(self._final(speech_end_s))

    async def _final(self, speech_end_s: float) -> None:
        waited = False

        async def final() -> SpeechResult:
            nonlocal waited
            running = self._running
            if not waited and running is not None and not running.done():
                # An interim is on its way: it may be all we need. Waited for once, inside the
                # final's own time limit: a hung interim must not hold the turn for ever.
                waited = True
                await asyncio.shield(running)
            latest = self._latest
            if latest is not None and latest.decisive and latest.end_s >= speech_end_s:
                return SpeechResult(latest.text, True, 0.0, latest.end_s, reused=True,
                                    decisive=True, alternatives=latest.alternatives)
            audio = self._audio()
            transcript = await self._stt.transcribe(audio, final=True)
            return SpeechResult(transcript.text, True, 0.0, len(audio) / self.sample_rate,
                                decisive=True, alternatives=transcript.alternatives)

        try:
            result = await (self._final_call(final) if self._final_call is not None else final())
        except ProviderError as exc:
            self._push(SpeechFailure(exc, final=True))
            return
        self._push(result)

    def _push(self, result: SpeechResult | SpeechFailure) -> None:
        if not self._closed:
            self.on_result(result)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return self._tasks.spawn(coro, "transcribe")

    async def aclose(self) -> None:
        self._closed = True
        await self._tasks.stop()
