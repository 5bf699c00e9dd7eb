"""One utterance over one Deepgram connection (:class:`DeepgramStream`), as
:class:`~voice_agent.services.stt_deepgram.DeepgramSTT` opens it; services/stt_deepgram.py's
docstring describes the protocol and how a stream goes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from voice_agent.core.errors import ProviderError, ProviderTimeoutError
from voice_agent.core.tasks import TaskSet
from voice_agent.services.stt_deepgram_wire import (CLOSE_S, CLOSE_STREAM, FINALIZE, KEEPALIVE,
                                                    _close, _closed_errors, _error_message,
                                                    _float, _json, _lost, _transcript,
                                                    to_linear16)
from voice_agent.services.stt_stream import (FinalCall, ResultSink, SpeechFailure, SpeechResult,
                                             STTStream)

if TYPE_CHECKING:
    from voice_agent.services.stt_deepgram import DeepgramSTT


class DeepgramStream(STTStream):
    """One utterance over one Deepgram connection; see services/stt_deepgram.py's docstring."""

    def __init__(self, stt: DeepgramSTT, on_result: ResultSink, *,
                 final_call: FinalCall | None = None) -> None:
        super().__init__(on_result, stt.sample_rate)
        self._stt = stt
        self._final_call = final_call
        self.on_end_of_speech: Callable[[float], None] | None = None
        """With ``stt.provider_endpointing``: called with the end of speech (seconds from the
        stream's start) when Deepgram says the speech ended (``speech_final``,
        ``UtteranceEnd``). The pipeline may end the turn there (docs/providers.md)."""
        self._pcm = bytearray()  # everything fed: sent again if the connection is lost
        self._outbox: asyncio.Queue[bytes | str | None] = asyncio.Queue()
        self._segments: list[str] = []  # Deepgram's is_final transcripts, in order
        self._last_interim: tuple[str, float] | None = None
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Resolved when Deepgram has answered the Finalize; failed when the connection is
        lost first."""
        self._failed: ProviderError | None = None
        self._ws: Any = None
        self._flushing = False  # a decisive interim's Finalize is waiting for its answer
        self._finalizes = 0  # Finalize messages sent ...
        self._finalized_answers = 0  # ... and Results with from_finalize received
        self._finalized = False
        self._closed = False
        self._tasks = TaskSet("deepgram stream")
        self._connection = self._tasks.spawn(self._run(), "connection")

    # -- the interface --------------------------------------------------------------------------

    def feed(self, audio: np.ndarray) -> None:
        if self._closed or self._finalized:
            return
        pcm = to_linear16(audio)
        self._samples += len(pcm) // 2
        self._pcm += pcm
        if self._failed is None:
            self._outbox.put_nowait(pcm)

    def request_interim(self, *, decisive: bool = False) -> None:
        """Deepgram sends its interims by itself. A *decisive* one (at a pause: its words may
        become the turn's) is asked for with ``Finalize``, which flushes what Deepgram holds and
        answers with finalized text covering all the audio sent; the stream goes on after it.
        One at a time."""
        if not decisive or self._flushing or self._finalized or self._closed \
                or self._failed is not None:
            return
        self._flushing = True
        self._finalizes += 1
        self._outbox.put_nowait(FINALIZE)
        # Deepgram may not answer a Finalize when it holds no audio: do not wait for ever.
        asyncio.get_running_loop().call_later(self._stt.timeout_s, self._unanswered)

    def _unanswered(self) -> None:
        if self._flushing:
            self._flushing = False
            self._finalizes -= 1  # the final waits for the answers that will come

    def finalize(self, speech_end_s: float) -> None:
        if self._closed or self._finalized:
            return
        self._finalized = True
        self._tasks.spawn(self._final(), "final")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        ws = self._ws
        if ws is not None:
            try:  # CloseStream ends Deepgram's side (and its billing) cleanly, then our close
                async with asyncio.timeout(CLOSE_S):
                    await ws.send(CLOSE_STREAM)
                    await ws.close()
            except Exception:  # closed already, or too slow: abandoned below
                ws.transport.abort()
        await self._tasks.stop()

    # -- the connection ---------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            ws = await self._stt.connect()
        except ProviderError as exc:
            self._lose(exc)
            return
        if self._closed:
            await _close(ws)
            return
        self._ws = ws
        sender = self._tasks.spawn(self._send(ws), "send")
        try:
            async for message in ws:
                self._on_message(_json(message))
        except _closed_errors() as exc:
            self._lose(_lost(self._stt.name, exc))
        else:  # a normal close: every answer is in, unless it came before the end of speech
            if not self._finalized and not self._closed:
                self._lose(ProviderError(self._stt.name, "Deepgram closed the stream early"))
            self._resolve()
        finally:
            sender.cancel()

    async def _send(self, ws: Any) -> None:
        keepalive_s = self._stt.keepalive_s
        try:
            while True:
                try:
                    async with asyncio.timeout(keepalive_s):
                        item = await self._outbox.get()
                except TimeoutError:
                    await ws.send(KEEPALIVE)
                    continue
                if item is None:
                    return
                await ws.send(item)
        except _closed_errors():
            return  # the receiving side reports it

    def _on_message(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "Results":
            text = _transcript(msg)
            end_s = _float(msg.get("start")) + _float(msg.get("duration"))
            if msg.get("is_final"):
                if text:
                    self._segments.append(text)
                words = " ".join(self._segments)
            else:
                words = " ".join([*self._segments, text] if text else self._segments)
            flushed = bool(msg.get("from_finalize"))
            if flushed:
                self._finalized_answers += 1
            # A decisive interim is pushed even without words: "nothing was said" is an answer.
            answer = flushed and self._flushing
            if not self._finalized and (answer or (
                    words and (words, end_s) != self._last_interim)):
                self._last_interim = (words, end_s)
                self._push(SpeechResult(words, False, 0.0, end_s,
                                        decisive=bool(msg.get("is_final"))))
            if answer:
                self._flushing = False
            if msg.get("speech_final") and text:
                self._end_of_speech(end_s)
            if flushed and self._finalized and self._finalized_answers >= self._finalizes:
                self._resolve()  # the answer to the last Finalize, the end of speech's
        elif kind == "UtteranceEnd":
            self._end_of_speech(_float(msg.get("last_word_end")))
        elif kind == "Metadata":
            self._resolve()
        elif kind == "Error":
            self._lose(_error_message(self._stt.name, msg))

    def _end_of_speech(self, end_s: float) -> None:
        if self._stt.endpointing and self.on_end_of_speech is not None and not (
                self._finalized or self._closed):
            self.on_end_of_speech(end_s)

    def _resolve(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    def _lose(self, error: ProviderError) -> None:
        """The connection is gone: the final's first try fails with ``error``; interims stop
        (reported once, as an interim failure, before the end of the utterance)."""
        if self._failed is not None or self._done.done():
            return
        self._failed = error
        self._done.set_exception(error)
        self._done.exception()  # retrieved: nobody may be waiting yet
        if not self._finalized:
            self._push(SpeechFailure(error, final=False))

    # -- the final --------------------------------------------------------------------------

    async def _final(self) -> None:
        tries = 0

        async def final() -> SpeechResult:
            nonlocal tries
            tries += 1
            if tries == 1:
                text = await self._live_final()
            else:  # the live connection failed: the utterance again, over a fresh one
                text = await self._stt.transcribe_pcm(bytes(self._pcm))
            return SpeechResult(text, True, 0.0, self.duration_s, decisive=True)

        fallback = self._stt.fallback
        try:
            try:
                result = await (self._final_call(final) if self._final_call is not None
                                else final())
            except ProviderError as exc:
                if fallback is None:
                    raise
                fallback.enter(exc)
                audio = np.frombuffer(bytes(self._pcm), "<i2").astype(np.float32) / 32767.0
                text = (await fallback.transcribe(audio, final=True)).text
                result = SpeechResult(text, True, 0.0, self.duration_s, decisive=True)
            else:
                if fallback is not None:
                    fallback.leave()
        except ProviderError as exc:
            self._push(SpeechFailure(exc, final=True))
        else:
            self._push(result)
        finally:
            self._outbox.put_nowait(None)
            if self._ws is not None:
                await _close(self._ws)

    async def _live_final(self) -> str:
        if self._failed is None:
            self._finalizes += 1
            self._outbox.put_nowait(FINALIZE)
            self._outbox.put_nowait(CLOSE_STREAM)
        try:
            async with asyncio.timeout(self._stt.timeout_s):
                await asyncio.shield(self._done)
        except TimeoutError:
            raise ProviderTimeoutError(self._stt.name, "no final transcript within "
                                       f"{self._stt.timeout_s:g}s") from None
        return " ".join(self._segments)

    def _push(self, result: SpeechResult | SpeechFailure) -> None:
        if not self._closed:
            self.on_result(result)
