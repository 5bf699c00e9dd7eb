"""The turn-taking flow, top to bottom.

    audio in ─► VAD turn detector ─► STT stream (interims while the user speaks)
      speech start during a reply ─► barge-in: sink flushed, LLM and TTS cancelled
      pause ─► a transcript is started early; if it covers all the speech, the reply is
               prepared speculatively but held back (resume ─► it is dropped, unheard)
      end of turn ─► the held reply is released, or: final transcript ─► ReplySpeaker
                     (LLM → chunker → TTS → sink)
      reply played ─► history gets what was said; metrics event for the turn
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..core.config import V3Config
from ..core.conversation import ConversationManager
from ..core.events import (ErrorEvent, EventSink, MetricsEvent, PipelineEvent, ResponseEvent,
                           StatusEvent, TranscriptEvent)
from ..core.status import ProcessingStatus
from ..core.recovery import ErrorRecoveryManager, recovery_from_config
from ..services.base import STTStream, Transcript
from ..services.errors import ProviderError
from ..services.factory import Services
from .metrics import TurnMetrics
from .playback import watch_playback
from .reply import ReplySpeaker, ReplyState
from .sink import AudioSink
from .turn_detector import TurnDetector, TurnEvent, TurnOptions

log = logging.getLogger(__name__)

APOLOGY = "Sorry, I'm having trouble answering right now. Please try again in a moment."
PREROLL_MS = 300  # audio kept from before speech was confirmed, so first syllables aren't lost
PREFILL_EVERY_WORDS = 3  # new words an interim must add before the LLM reads it again


@dataclass
class _Interim:
    stream: STTStream
    covers_s: float
    transcript: Transcript


@dataclass
class _Speculation:
    """A reply started during the user's pause; heard only if the turn really ends."""

    stream: STTStream
    metrics: TurnMetrics
    commit: asyncio.Event
    task: asyncio.Task[None]


class VoicePipeline:
    def __init__(self, services: Services, config: V3Config, *, emit: EventSink, sink: AudioSink,
                 session_id: str = "", conversation: ConversationManager | None = None,
                 recovery: ErrorRecoveryManager | None = None) -> None:
        self.services, self.config, self.sink = services, config, sink
        self.session_id = session_id
        self._emit_to_client = emit
        self.conversation = conversation or ConversationManager(
            config.ai.system_prompt, max_messages=config.ai.history_messages)
        stt = config.stt
        self._detector = TurnDetector(services.vad.create(), TurnOptions(
            threshold=stt.vad_threshold, min_speech_ms=stt.min_speech_ms,
            end_of_turn_silence_ms=stt.end_of_turn_silence_ms, max_utterance_s=stt.max_utterance_s,
            early_silence_ms=stt.pause_ms))
        self._streaming = config.pipeline.mode == "streaming"
        # One recovery manager per server (shared breakers); a pipeline on its own makes its own.
        self.recovery = recovery or recovery_from_config(config.recovery)
        self._speaker = ReplySpeaker(services.llm, services.tts, sink, self._emit, self.recovery,
                                     max_tokens=config.ai.max_tokens, timeout_s=config.ai.timeout_s,
                                     streaming=self._streaming,
                                     first_piece_max_words=config.pipeline.first_piece_max_words)
        self._frame = self._detector.vad.frame_samples
        self._pending = np.zeros(0, np.float32)
        self._preroll: deque[np.ndarray] = deque(maxlen=max(1, int(PREROLL_MS / self._detector.frame_ms)))
        self._stt: STTStream | None = None
        self._utterance: list[np.ndarray] = []  # frames of the current utterance
        self._untranscribed: list[np.ndarray] = []  # an ended utterance whose transcript isn't final yet
        self._interim_loop: asyncio.Task[None] | None = None
        self._interim_running: asyncio.Task[None] | None = None
        self._interim_again = False
        self._latest: _Interim | None = None
        self._prefilled_words = 0  # words of this utterance the LLM has read (prefill)
        self._spec: _Speculation | None = None
        self._turn_task: asyncio.Task[None] | None = None
        self._reply: ReplyState | None = None
        self._carry_over = ""  # words of a turn cut off by the user before the agent said anything
        self._turns = 0
        self._closed = False
        self.status = ProcessingStatus.IDLE

    # ── inputs ────────────────────────────────────────────────────────────────────────────
    async def start(self) -> None:
        await self._set_status(ProcessingStatus.LISTENING)

    async def push_audio(self, pcm: np.ndarray) -> None:
        """Feed float32 mono 16 kHz audio of any length."""
        if self._closed:
            return
        audio = np.concatenate([self._pending, np.asarray(pcm, np.float32).reshape(-1)])
        whole = len(audio) // self._frame * self._frame
        self._pending = audio[whole:]
        for i in range(0, whole, self._frame):
            await self._on_frame(audio[i:i + self._frame])

    async def push_text(self, text: str) -> None:
        """A typed user message: a turn without the microphone side."""
        if self._closed or not text.strip():
            return
        await self.interrupt()
        metrics = TurnMetrics(turn=self._next_turn(), source="text")
        metrics.mark("end_of_turn")
        metrics.mark("transcript_final")
        self._turn_task = asyncio.create_task(self._respond(text.strip(), metrics))

    async def interrupt(self, *, by_speech: bool = False) -> None:
        """Stop the agent now: flush queued audio first (what the user hears), then cancel."""
        task = self._turn_task
        if task is None or task.done():
            return
        if self._reply is not None:
            self._reply.cut_at_s = self._reply.audio_queued_s - self.sink.queued_s()
            self._reply.cut_by_speech = by_speech
        self.sink.clear()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def drain(self) -> None:
        """Wait until the current turn (transcript, reply and its playback) is over."""
        while self._turn_task is not None and not self._turn_task.done():
            await asyncio.gather(self._turn_task, return_exceptions=True)

    async def close(self) -> None:
        if self._closed:
            return
        await self.interrupt()
        self._drop_speculation()
        self._closed = True
        for t in (self._interim_loop, self._interim_running, self._turn_task):
            if t is not None and not t.done():
                t.cancel()
                await asyncio.gather(t, return_exceptions=True)
        self.status = ProcessingStatus.IDLE

    # ── listening ─────────────────────────────────────────────────────────────────────────
    async def _on_frame(self, frame: np.ndarray) -> None:
        event = self._detector.process(frame)
        if self._stt is not None:
            self._stt.feed(frame)
            self._utterance.append(frame)
        else:
            self._preroll.append(frame)
        if event is TurnEvent.SPEECH_START:
            await self._on_speech_start()
        elif event is TurnEvent.PAUSE and self._streaming:
            self._request_interim(again=True)
        elif event is TurnEvent.RESUME:
            self._drop_speculation()
        elif event is TurnEvent.END_OF_TURN:
            self._on_end_of_turn()

    async def _on_speech_start(self) -> None:
        carried: list[np.ndarray] = []
        if self._turn_task is not None and not self._turn_task.done():
            log.info("[%s] barge-in", self.session_id)
            # Still transcribing the last utterance: the user only paused, so hear it all again.
            carried = self._untranscribed
            await self.interrupt(by_speech=True)
        self._stt = self.services.stt.create_stream()
        self._utterance = [*carried, *self._preroll]
        for f in self._utterance:
            self._stt.feed(f)
        self._preroll.clear()
        self._latest = None
        self._prefilled_words = 0
        if self._streaming:
            self._interim_loop = asyncio.create_task(self._interims(self._stt))
        await self._set_status(ProcessingStatus.LISTENING)

    async def _interims(self, stream: STTStream) -> None:
        interval = self.config.stt.interim_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            # During a held reply only silence came in: nothing to redo. A busy STT (other
            # sessions) would only queue this interim behind theirs: skip it.
            if self._spec is None and not self.services.stt.busy:
                self._request_interim()

    def _request_interim(self, *, again: bool = False) -> None:
        """Transcribe what was heard so far, unless a transcription is already running."""
        if self._stt is None:
            return
        if self._interim_running is not None and not self._interim_running.done():
            self._interim_again = self._interim_again or again
            return
        self._interim_running = asyncio.create_task(self._run_interim(self._stt))

    async def _run_interim(self, stream: STTStream) -> None:
        covers = stream.duration_s
        try:
            transcript = await stream.interim()
        except ProviderError as exc:
            log.warning("[%s] interim transcript failed: %s", self.session_id, exc)
            return
        if transcript is not None:
            self._latest = _Interim(stream, covers, transcript)
            if transcript.text and stream is self._stt:
                await self._emit(TranscriptEvent(transcript.text, final=False))
                if self._detector.paused:
                    self._maybe_speculate(stream, covers, transcript.text)
                else:
                    self._prefill(transcript.text)
        if self._interim_again and stream is self._stt:
            self._interim_again = False
            # A pause came while this one ran: redo it, unless it already heard everything (a
            # second transcription would only slow down the reply that was just started).
            if transcript is None or not self._covers_speech(stream, covers):
                self._interim_running = asyncio.create_task(self._run_interim(stream))

    def _covers_speech(self, stream: STTStream, covers_s: float) -> bool:
        """True if audio up to ``covers_s`` holds all the speech of ``stream`` so far."""
        return covers_s >= stream.duration_s - self._detector.silence_run_ms / 1000

    def _maybe_speculate(self, stream: STTStream, covers_s: float, text: str) -> None:
        """The user is pausing (the caller checked): if this transcript covers all they said,
        start the reply now."""
        if self._spec is not None or not self._covers_speech(stream, covers_s):
            return
        metrics = TurnMetrics(turn=0, source="voice", transcript_reused=True)
        metrics.mark("transcript_final")
        commit = asyncio.Event()
        text = f"{self._carry_over} {text}".strip()
        task = asyncio.create_task(self._respond(text, metrics, commit=commit))
        self._spec = _Speculation(stream, metrics, commit, task)
        log.info("[%s] reply started early on %r", self.session_id, text)

    def _prefill(self, text: str) -> None:
        """The user is still speaking: let the LLM read what they said so far, so that at the
        pause only the last words (and the chat template's tail) are left to read. Every
        prefill re-reads that tail (~5 tokens), so it waits for a few new words, and for an
        idle machine: with other sessions' work queued it would only add to the queue."""
        n = len(text.split())
        enough = n >= self._prefilled_words + PREFILL_EVERY_WORDS
        if not (self.config.ai.prefill_while_speaking and enough) or self.services.stt.busy:
            return
        text = f"{self._carry_over} {text}".strip()
        if self.services.llm.prefill(self.conversation.context(text)):
            self._prefilled_words = n

    def _drop_speculation(self) -> None:
        """The user went on talking: the held reply was never heard, so just cancel it."""
        spec, self._spec = self._spec, None
        if spec is not None:
            log.info("[%s] early reply dropped: the user went on", self.session_id)
            spec.task.cancel()  # not awaited: the audio loop must not wait for the LLM to stop

    def _on_end_of_turn(self) -> None:
        stream, self._stt = self._stt, None
        self._untranscribed, self._utterance = self._utterance, []
        if self._interim_loop is not None:
            self._interim_loop.cancel()
        if stream is None:
            return
        silence_s = self._detector.silence_run_ms / 1000
        speech_end_s = max(0.0, stream.duration_s - silence_s)
        spec, self._spec = self._spec, None
        metrics = spec.metrics if spec is not None and spec.stream is stream else None
        if metrics is None:
            if spec is not None:
                spec.task.cancel()
            metrics = TurnMetrics(turn=0, source="voice")
        metrics.turn = self._next_turn()
        metrics.mark("speech_end", time.monotonic() - silence_s)
        metrics.mark("end_of_turn")
        metrics.user_speech_ms = speech_end_s * 1000
        if spec is not None and spec.metrics is metrics:
            self._untranscribed, self._carry_over = [], ""
            self._turn_task = spec.task
            spec.commit.set()  # the reply prepared during the pause is heard now
            return
        self._turn_task = asyncio.create_task(
            self._run_turn(stream, speech_end_s, self._interim_running, metrics))

    async def _run_turn(self, stream: STTStream, speech_end_s: float,
                        running: asyncio.Task[None] | None, metrics: TurnMetrics) -> None:
        await self._set_status(ProcessingStatus.PROCESSING)
        try:
            if running is not None and not running.done():
                await asyncio.shield(running)  # a pause transcript is on its way: don't redo it
            latest = self._latest
            if latest is not None and latest.stream is stream and latest.covers_s >= speech_end_s:
                transcript, metrics.transcript_reused = latest.transcript, True
            else:
                transcript = await self.recovery.call(
                    self.services.stt.name, stream.finish, timeout_s=self.config.ai.timeout_s)
        except ProviderError as exc:
            await self._fail(exc, metrics)
            return
        self._untranscribed = []
        text = f"{self._carry_over} {transcript.text}".strip()
        self._carry_over = ""
        if not text:  # noise, a cough, or words Whisper could not make out: no turn
            await self._set_status(ProcessingStatus.LISTENING)
            return
        metrics.mark("transcript_final")
        await self._respond(text, metrics)

    # ── answering ─────────────────────────────────────────────────────────────────────────
    async def _respond(self, user_text: str, metrics: TurnMetrics,
                       commit: asyncio.Event | None = None) -> None:
        """Answer ``user_text``. With ``commit``, prepare the reply but release nothing
        (events, audio) until the turn is committed."""
        messages = self.conversation.context(user_text)
        state = ReplyState()
        release = asyncio.Event()
        speaker = asyncio.create_task(self._speaker.run(
            messages, state, metrics, on_first_audio=self._on_first_audio, gate=release))
        try:
            if commit is not None:
                await commit.wait()
            self._reply = state
            self.sink.clear()  # a new burst: playback_started_at now refers to this reply
            await self._emit(TranscriptEvent(user_text, final=True))
            await self._set_status(ProcessingStatus.PROCESSING)
            release.set()
            watcher = asyncio.create_task(watch_playback(self.sink, metrics, speaker))
            try:
                await speaker
                while self.sink.queued_s() > 0:  # still speaking until the last frame went out
                    await asyncio.sleep(0.02)
                await watcher  # done once the speaker is: first frame marked, gaps counted
            finally:
                watcher.cancel()
        except asyncio.CancelledError:
            speaker.cancel()
            await asyncio.gather(speaker, return_exceptions=True)
            if release.is_set():
                await self._record_interrupted(user_text, state, metrics)
            raise
        except ProviderError as exc:
            self.conversation.add_user(user_text)
            await self._fail(exc, metrics)
            return
        self.conversation.add_user(user_text)
        self.conversation.add_assistant(state.text)
        await self._emit(ResponseEvent(state.text, final=True))
        await self._finish_turn(metrics)

    async def _on_first_audio(self) -> None:
        await self._set_status(ProcessingStatus.SPEAKING)

    async def _record_interrupted(self, user_text: str, state: ReplyState, metrics: TurnMetrics) -> None:
        played = state.cut_at_s if state.cut_at_s is not None else state.audio_queued_s - self.sink.queued_s()
        self.sink.clear()
        spoken = state.spoken_text(max(0.0, played))
        metrics.interrupted = True
        if played <= 0 and state.cut_by_speech:
            # The user spoke again before hearing anything: their words join the next turn.
            self._carry_over = user_text
        else:
            self.conversation.add_user(user_text)
            self.conversation.add_assistant(state.text, interrupted=True, spoken_text=spoken)
        await self._emit(ResponseEvent(state.text, final=True, interrupted=True, spoken_text=spoken))
        await self._finish_turn(metrics)

    async def _finish_turn(self, metrics: TurnMetrics) -> None:
        self._reply = None
        data = metrics.as_dict()
        log.info("[%s] turn %d metrics %s", self.session_id, metrics.turn,
                 {k: v for k, v in data.items() if k.endswith("_ms") and not k.startswith("at_")})
        await self._emit(MetricsEvent(data))
        await self._set_status(ProcessingStatus.LISTENING)

    async def _fail(self, exc: ProviderError, metrics: TurnMetrics) -> None:
        """A provider gave up: tell the client, say sorry aloud, and keep listening."""
        log.warning("[%s] turn %d failed: %s", self.session_id, metrics.turn, exc)
        await self._emit(ErrorEvent(exc.code, str(exc), fatal=False))
        with contextlib.suppress(ProviderError, Exception):
            async for chunk in self.services.tts.synthesize(APOLOGY):
                await self.sink.play(chunk)
        await self._finish_turn(metrics)

    # ── plumbing ──────────────────────────────────────────────────────────────────────────
    def _next_turn(self) -> int:
        """Turns are numbered when they start for real (a held reply, at its commit)."""
        self._turns += 1
        return self._turns

    async def _set_status(self, status: ProcessingStatus) -> None:
        if status is not self.status:
            self.status = status
            await self._emit(StatusEvent(status))

    async def _emit(self, event: PipelineEvent) -> None:
        if self._closed:
            return
        try:
            await self._emit_to_client(event)
        except Exception:  # a client that went away must not break the turn
            log.debug("[%s] could not deliver %s", self.session_id, event.type, exc_info=True)
