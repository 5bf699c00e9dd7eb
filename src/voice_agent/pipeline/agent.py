"""One session's voice pipeline: the components, driven by the turn coordinator.

    audio in ─► VAD turn detector ──events──► TurnCoordinator (pipeline/turn.py: the logic)
    STT stream results, reply progress ─────►        │
                                                     ▼ commands
    STT stream (open, interim, finalize, drop) · LLM prefill · ReplySpeaker (LLM → chunker →
    TTS → sink: start, hold, release, cancel) · events to the client

This module only carries commands out and turns what the components report into events. Every
event is handled under one lock, in the order it came, so the coordinator sees one at a time.
Cancellation is bounded: a cancelled reply gets STOP_DEADLINE_S to stop, then is abandoned with
its stack logged; its sink is muted at once, so a reply that does not stop is never heard.
Beside it: how the LLM is asked for an end-of-turn score (end_of_turn_score.py), and the
watchers of a stalled turn and of a user gone quiet (watch.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

import numpy as np

from ..core.config import V3Config
from ..core.conversation import ConversationManager
from ..core.events import EventSink, PipelineEvent, TranscriptEvent
from ..core.recovery import ErrorRecoveryManager, recovery_from_config
from ..core.status import ProcessingStatus
from ..core.tasks import TaskSet
from ..services.base import VAD, ChatMessage, SpeechFailure, SpeechResult, STTStream
from ..services.factory import Services
from ..services.priority_lock import CORES, URGENT
from .backchannel import Backchannels
from .end_of_turn import EndOfTurnRule
from .end_of_turn_score import EndOfTurnScorer
from .replies import Replies
from .reply import ReplySpeaker
from ..tools import ToolRegistry
from .sink import AudioSink
from .turn import TurnCoordinator, TurnState
from .watch import PipelineWatch
from .turn_detector import PREROLL_MAX_MS, TurnDetector, TurnEvent, TurnOptions
from .typed import TypedTurns
from .turn_events import (CancelReply, CloseRequested, Command, DropTranscript, Emit,
                          FinalizeTranscript, InterimTick, InterruptRequested, OpenTranscript,
                          EndOfTurnScored, EndSession, PauseReply, ResumeReply, SayLine,
                          ScoreEndOfTurn, SetEndSilence,
                          Prefill, ReleaseReply, ReplyEnded, ReplyFirstAudio, RequestInterim,
                          SpeechEnded, SpeechPaused, SpeechResumed, SpeechStarted, StartApology,
                          StartReply, TextTyped, TranscriptFailed, TranscriptReceived, TurnInput,
                          WithdrawInterim)

log = logging.getLogger(__name__)


class VoicePipeline(PipelineWatch):
    def __init__(self, services: Services, config: V3Config, *, emit: EventSink, sink: AudioSink,
                 session_id: str = "", conversation: ConversationManager | None = None,
                 recovery: ErrorRecoveryManager | None = None, vad: VAD | None = None) -> None:
        """``vad``: this session's detector, made by the caller (off the event loop: a native
        one takes tens of ms to build); by default ``services.vad.create()`` here."""
        self.services, self.config, self.sink = services, config, sink
        self.session_id = session_id
        self._key = session_id or f"pipeline-{id(self)}"
        self._emit_to_client = emit
        self.conversation = conversation or ConversationManager(
            config.ai.system_prompt, max_messages=config.ai.history_messages)
        stt = config.stt
        self._detector = TurnDetector(vad or services.vad.create(), TurnOptions(
            threshold=stt.vad_threshold, min_speech_ms=stt.min_speech_ms,
            end_of_turn_silence_ms=stt.end_of_turn_silence_ms, max_utterance_s=stt.max_utterance_s,
            early_silence_ms=stt.pause_ms))
        self._streaming = config.pipeline.mode == "streaming"
        # One recovery manager per server (shared breakers); a pipeline on its own makes its own.
        self.recovery = recovery or recovery_from_config(config.recovery)
        self._speaker = ReplySpeaker(services.llm, services.tts, sink, self._emit, self.recovery,
                                     max_tokens=config.ai.max_tokens, timeout_s=config.ai.timeout_s,
                                     streaming=self._streaming,
                                     first_piece_max_words=config.pipeline.first_piece_max_words,
                                     conversation=session_id or None,
                                     tools=ToolRegistry.from_config(config.tools),
                                     activity=services.activity,
                                     make_way=config.pipeline.make_way,
                                     take_turns=(config.server.take_turns_on_cores
                                                 and config.ai.provider == "llamacpp"))
        self.coordinator = TurnCoordinator(
            self.conversation, session_id=session_id, prefill=config.ai.prefill_while_speaking,
            backchannels=Backchannels(config.pipeline.backchannels),
            end_of_turn=(EndOfTurnRule(done_ms=stt.end_of_turn_done_ms,
                                        unsure_ms=stt.end_of_turn_unsure_ms)
                          if stt.end_of_turn_by_meaning else None),
            end_silence_ms=stt.end_of_turn_silence_ms,
            score_early=self._streaming and config.pipeline.score_while_speaking,
            preempt=self._streaming and config.pipeline.preemptive_reply,
            hearings_max_words=stt.alternatives_max_words)
        rule = self.coordinator.end_of_turn
        self._scorer = EndOfTurnScorer(
            services.llm, conversation=session_id or None, cores=self._cores,
            session_id=session_id,
            statement_check_p=(rule.done_p if rule is not None and stt.end_of_turn_statements
                               else None))
        self._tasks = TaskSet(f"[{session_id}]")
        self._replies = Replies(self._speaker, services.tts, sink, emit=self._emit,
                                tasks=self._tasks,
                                on_first_audio=lambda rid: self._post(ReplyFirstAudio(rid)),
                                on_end=lambda rid, error: self._post(ReplyEnded(rid, error)))
        self._frame = self._detector.vad.frame_samples
        self._pending = np.zeros(0, np.float32)
        self._preroll: deque[np.ndarray] = deque(
            maxlen=math.ceil(PREROLL_MAX_MS / self._detector.frame_ms))
        self._open: tuple[int, STTStream] | None = None  # the stream fed with incoming audio
        self._streams: dict[int, STTStream] = {}
        self._utterance: list[np.ndarray] = []  # frames of the open stream's utterance
        self._untranscribed: list[np.ndarray] = []  # an ended utterance, not final yet
        self._lock = asyncio.Lock()
        self._posted: deque[TurnInput] = deque()  # from callbacks and tasks, not handled yet
        self._ticker: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._progress_at = time.monotonic()
        self._changed = asyncio.Event()
        self._closed = False
        self.on_end: Callable[[str], None] | None = None
        """Called when the conversation is over (the idle goodbye was said): the session
        closes (set by the server)."""
        self._quiet_since = time.monotonic()
        """When the last turn event came (the idle prompts count from there)."""
        self._idle_stage = 0
        """0: the user is around; 1: asked whether they are still there; 2: said goodbye."""
        self._typed = TypedTurns(self._typed_turn, self._cut_for_typing, self._tasks)

    @property
    def status(self) -> ProcessingStatus:
        return self.coordinator.status

    @property
    def state(self) -> TurnState:
        return self.coordinator.state

    # ── inputs ────────────────────────────────────────────────────────────────────────────
    async def start(self) -> None:
        async with self._lock:
            for command in self.coordinator.start():
                await self._execute(command)
        self._watchdog = self._tasks.spawn(self._watch(), "watchdog")
        if self.config.pipeline.idle_prompt_s > 0:
            self._tasks.spawn(self._watch_idle(), "idle-prompts")

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
        """A typed user message: a turn without the microphone side (a burst of them is one
        turn, see typed.py)."""
        if not self._closed and text.strip():
            await self._typed.push(text.strip())

    async def _cut_for_typing(self) -> None:
        await self._dispatch(InterruptRequested(self._heard_s()))

    async def _typed_turn(self, text: str) -> None:
        if not self._closed:
            await self._dispatch(TextTyped(text, self._heard_s()))

    async def interrupt(self) -> None:
        """Stop the agent now (what the user hears first), and wait, bounded, for it to stop."""
        await self._dispatch(InterruptRequested(self._heard_s()))
        await self._replies.stopped()

    async def drain(self) -> None:
        """Wait until the pipeline waits for the user: any transcript, reply and playback of
        the current turn are over, and no burst of typed messages is still held."""
        while not self._closed and (self._typed.held or not (
                self.coordinator.idle or self._waiting_for_user())):
            changed = self._changed
            await changed.wait()

    async def close(self) -> None:
        """End the session's turn-taking: the reply is cut (and recorded as heard so far), every
        task is stopped within its deadline. Idempotent."""
        if self._closed:
            return
        await self._dispatch(CloseRequested(self._heard_s()))
        held = self._typed.take_held()
        if held:  # typed, never answered: the transcript still keeps it
            await self._emit(TranscriptEvent(held, final=True))
        self._closed = True
        self.services.activity.set_busy(self._key, False)
        self._changed.set()
        for stream in list(self._streams.values()):
            await stream.aclose()
        self._streams.clear()
        await self._replies.stopped()
        # A cut reply still running here outlived its deadline: it was logged and given up on
        # already, and waiting for it again would double the time close() takes.
        await self._tasks.stop(skip=self._replies.cut)

    def _cores(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Take a turn on the cores for a burst of local model work (server.take_turns_on_cores)."""
        if self.config.server.take_turns_on_cores:
            return CORES.hold(URGENT)
        return contextlib.nullcontext()

    def _light(self) -> bool:
        """Enough sessions are in a turn at once that this one spends nothing on comfort
        (pipeline.light_at_sessions)."""
        return self._in_turn_at(self.config.pipeline.light_at_sessions)

    def _in_turn_at(self, at: int) -> bool:
        """``at`` sessions or more (this one included) are in a turn at once (0: never)."""
        return at > 0 and self.services.activity.others(self._key) + 1 >= at

    def _waiting_for_user(self) -> bool:
        return self.coordinator.state in (TurnState.USER_SPEAKING, TurnState.USER_PAUSED)

    # ── audio → turn events ───────────────────────────────────────────────────────────────
    async def _on_frame(self, frame: np.ndarray) -> None:
        event = self._detector.process(frame)
        if self._open is not None:
            self._open[1].feed(frame)
            self._utterance.append(frame)
        else:
            self._preroll.append(frame)
        if event is TurnEvent.SPEECH_START:
            await self._dispatch(SpeechStarted(self._heard_s()))
        elif event is TurnEvent.PAUSE:
            await self._dispatch(SpeechPaused())
        elif event is TurnEvent.RESUME:
            await self._dispatch(SpeechResumed())
        elif event is TurnEvent.END_OF_TURN and self._open is not None:
            silence_s = self._detector.silence_run_ms / 1000
            await self._dispatch(SpeechEnded(
                speech_end_s=max(0.0, self._open[1].duration_s - silence_s),
                speech_end_at=time.monotonic() - silence_s))

    def _heard_s(self) -> float:
        """Seconds of the released reply's audio sent to the user so far. The sink was cleared
        at its release, so this holds also once its task ended and its ReplyEnded is still on
        its way (the coordinator still replying): 0 there recorded a reply heard to the end
        as not heard at all."""
        replying = (self._replies.current is not None
                    or self.coordinator.state is TurnState.REPLYING)
        return self._replies.heard_s() if replying else 0.0

    # ── events in, commands out ───────────────────────────────────────────────────────────
    async def _dispatch(self, event: TurnInput | None) -> None:
        async with self._lock:
            # Events posted earlier come first, in the order they came: a posted event waits
            # for its task's turn, and audio handled meanwhile must not overtake it (speech
            # just after a reply ended was taken for a barge-in over it; a turn ending just
            # after its held reply failed released the failed reply instead of answering).
            while self._posted or event is not None:
                if self._posted:
                    now = self._posted.popleft()
                else:
                    now, event = event, None
                self._quiet_since = time.monotonic()
                if isinstance(now, (SpeechStarted, TextTyped)):
                    self._idle_stage = 0
                self.coordinator.light = self._light()
                self.coordinator.hearings = not self._in_turn_at(
                    self.config.pipeline.hearings_off_at_sessions)
                self.coordinator.pause_waits = not self._in_turn_at(
                    self.config.pipeline.pause_unscored_at_sessions)
                for command in self.coordinator.handle(now):
                    await self._execute(command)
                self.services.activity.set_busy(self._key, not self.coordinator.idle)
            self._progress_at = time.monotonic()
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    def _post(self, event: TurnInput) -> None:
        """Dispatch from a callback or another task, in the order posted."""
        if not self._closed:
            self._posted.append(event)
            self._tasks.spawn(self._dispatch(None), "dispatch")

    async def _execute(self, command: Command) -> None:
        match command:
            case Emit(event=event):
                await self._emit(event)
            case OpenTranscript():
                self._open_stream(command)
            case RequestInterim(stream=sid, decisive=decisive):
                if self._streaming and (stream := self._streams.get(sid)) is not None:
                    stream.request_interim(decisive=decisive)
            case FinalizeTranscript(stream=sid, speech_end_s=end):
                self._close_feed(sid, keep_audio=True)
                if (stream := self._streams.get(sid)) is not None:
                    stream.finalize(end)
            case WithdrawInterim(stream=sid):
                if (stream := self._streams.get(sid)) is not None:
                    stream.withdraw()
            case DropTranscript(stream=sid):
                self._close_feed(sid, keep_audio=True)
                if (stream := self._streams.pop(sid, None)) is not None:
                    self._tasks.spawn(stream.aclose(), "stt-close")
            case Prefill(messages=messages):
                if not self.services.stt.busy and not CORES.locked:
                    self.services.llm.prefill(messages, conversation=self.session_id or None)
            case StartReply(held=held):
                if not held:
                    self._untranscribed = []
                self._replies.start(command.reply, command.messages, command.metrics,
                                    command.state, held=held)
            case StartApology(reply=rid):
                self._replies.start_apology(rid)
            case ScoreEndOfTurn(stream=sid, messages=messages, text=text):
                self._tasks.spawn(self._score_end_of_turn(sid, messages, text), "end-of-turn")
            case SetEndSilence(ms=ms):
                self._detector.end_silence_ms = ms
            case SayLine(reply=rid, text=text):
                self._replies.start_line(rid, text)
            case EndSession(reason=reason):
                log.info("[%s] ending the session: %s", self.session_id, reason)
                if self.on_end is not None:
                    self.on_end(reason)
            case ReleaseReply(reply=rid):
                self._untranscribed = []
                self._replies.release(rid)
            case CancelReply(reply=rid, flush=flush):
                self._replies.cancel(rid, flush=flush)
            case PauseReply(reply=rid):
                self._replies.pause(rid, paused=True)
            case ResumeReply(reply=rid):
                self._replies.pause(rid, paused=False)

    # ── transcripts ───────────────────────────────────────────────────────────────────────
    def _open_stream(self, command: OpenTranscript) -> None:
        sid = command.stream

        def on_result(result: SpeechResult | SpeechFailure) -> None:
            self._progress_at = time.monotonic()
            if isinstance(result, SpeechFailure):
                self._post(TranscriptFailed(sid, result.error, result.final))
                return
            speech_s = stream.duration_s
            if self._open is not None and self._open[0] == sid:
                speech_s -= self._detector.silence_run_ms / 1000
            if result.final:
                self._streams.pop(sid, None)
                self._untranscribed = []
            self._post(TranscriptReceived(sid, result.text, result.final, result.end_s,
                                          speech_s, reused=result.reused,
                                          alternatives=result.alternatives))

        stream = self.services.stt.create_stream(on_result, final_call=self._final_call)
        if self.config.stt.provider_endpointing and hasattr(stream, "on_end_of_speech"):
            def on_end_of_speech(end_s: float) -> None:
                """The provider heard the speech end (Deepgram's speech_final, UtteranceEnd):
                the turn ends as if the VAD's silence had run out."""
                if self._open is None or self._open[0] != sid:
                    return  # the VAD ended it first, or the stream was dropped
                self._detector.reset()  # the next speech starts a turn, not a resume
                self._post(SpeechEnded(speech_end_s=end_s, speech_end_at=time.monotonic()
                                       - max(0.0, stream.duration_s - end_s)))
            stream.on_end_of_speech = on_end_of_speech  # type: ignore[attr-defined]
        preroll = list(self._preroll)[-self._detector.preroll_frames():]
        frames = [*(self._untranscribed if command.hear_again else []), *preroll]
        self._untranscribed, self._utterance = [], list(frames)
        self._preroll.clear()
        for frame in frames:
            stream.feed(frame)
        self._streams[sid] = stream
        self._open = (sid, stream)
        if self._streaming and self._ticker is None:
            self._ticker = self._tasks.spawn(self._tick(), "interims")

    async def _score_end_of_turn(self, sid: int, messages: list[ChatMessage],
                                 text: str = "") -> None:
        p = await self._scorer.score(messages, text)
        self._post(EndOfTurnScored(sid, p, text, gave_way=p is None and self._scorer.able))

    async def _final_call(self, transcribe: Callable[[], Awaitable[SpeechResult]]) -> SpeechResult:
        return await self.recovery.call(self.services.stt.name, transcribe,
                                        timeout_s=self.config.ai.timeout_s)

    def _close_feed(self, sid: int, *, keep_audio: bool) -> None:
        if self._open is None or self._open[0] != sid:
            return
        self._open = None
        if keep_audio:
            self._untranscribed = self._utterance
        self._utterance = []
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    async def _tick(self) -> None:
        interval = self.config.stt.interim_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            # A busy STT (other sessions) would only queue this interim behind theirs.
            # Posted, not awaited: this task is cancelled when the utterance ends, and must never
            # be cancelled halfway through handling an event.
            if self.coordinator.wants_interims and not self.services.stt.busy \
                    and not self._light():
                self._post(InterimTick())

    # ── plumbing ──────────────────────────────────────────────────────────────────────────
    async def _emit(self, event: PipelineEvent) -> None:
        if self._closed:
            return
        try:
            await self._emit_to_client(event)
        except Exception:  # a client that went away must not break the turn
            log.debug("[%s] could not deliver %s", self.session_id, event.type, exc_info=True)


