"""The agent's side of the turn coordinator: its replies released, ended, cut, resumed, and
the fixed lines (apology, idle prompts); the commands out. No I/O.

:class:`ReplySide` is the base of :class:`~voice_agent.pipeline.turn.TurnCoordinator`, which
holds the state and reads the user's side top to bottom; what happens to a reply once it
exists is here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..core.conversation import ConversationManager
from ..core.errors import ProviderError
from ..core.events import ErrorEvent, MetricsEvent, ResponseEvent, StatusEvent, TranscriptEvent
from ..core.messages import ChatMessage
from ..core.status import ProcessingStatus
from .backchannel import Backchannels
from .metrics import TurnMetrics
from .reply import ReplyState
from .turn_events import (CancelReply, Command, DropTranscript, Emit, EndSession,
                          ReleaseReply, ReplyEnded, ResumeReply, SayLine, StartApology,
                          StartReply, TranscriptReceived, UserIdle)
from .turn_state import TurnReply, TurnState

log = logging.getLogger(__name__)


class ReplySide:
    # The coordinator's state this side reads and changes (set in TurnCoordinator.__init__).
    conversation: ConversationManager
    backchannels: Backchannels
    clock: Callable[[], float]
    session_id: str
    state: TurnState
    status: ProcessingStatus
    stream: int | None
    reply: TurnReply | None
    overlap: float | None
    carry_over: str
    hearings: bool
    hearings_max_words: int
    _metrics: TurnMetrics | None
    _scoring: TurnReply | None
    _turns: int
    _ids: int
    _out: list[Command]

    def _start_held(self, reply: TurnReply) -> None:
        self.reply = reply
        self._do(StartReply(reply.id, self._context(reply), reply.metrics,
                            reply.state, held=True))
        log.info("[%s] reply started early on %r", self.session_id, reply.user_text)


    def _drop_held(self, why: str) -> None:
        assert self.reply is not None and self.overlap is None
        log.info("[%s] held reply to %r dropped: %s", self.session_id, self.reply.user_text, why)
        self._do(CancelReply(self.reply.id, flush=False))
        self.reply = None


    # ── the agent's side ──────────────────────────────────────────────────────────────────
    @property
    def _released(self) -> bool:
        return self.state is TurnState.REPLYING

    def _context(self, reply: TurnReply) -> list[ChatMessage]:
        """The LLM's messages for ``reply``: the history, then its user words and hearings."""
        return self.conversation.context(reply.user_text, heard_as=reply.heard_as)

    def _other_hearings(self, event: TranscriptReceived) -> tuple[str, ...]:
        """The event's other hearings, after the words carried over, as its text is."""
        return tuple(f"{self.carry_over} {h}".strip() for h in event.alternatives)

    def _hearings(self, event: TranscriptReceived) -> tuple[str, ...]:
        """The other hearings the LLM reads beside the words; none while enough other sessions
        are in a turn too (``hearings`` off, pipeline.hearings_off_at_sessions): each costs
        its words' reading before the first token (~+200 ms alone, bench latency A/B), and
        there every session's reading waits on every other's. None either for a transcript
        longer than ``hearings_max_words`` words: each hearing repeats all of them."""
        words = len(f"{self.carry_over} {event.text}".split())
        if not self.hearings or 0 < self.hearings_max_words < words:
            return ()
        return self._other_hearings(event)

    def _new_reply(self, user_text: str, metrics: TurnMetrics, *, stream: int | None = None,
                   heard_as: tuple[str, ...] = ()) -> TurnReply:
        return TurnReply(self._next_id(), user_text, metrics, ReplyState(), stream=stream,
                         heard_as=heard_as)

    def _release(self, reply: TurnReply) -> None:
        """The reply is heard from now on: show what the user said, let the audio out."""
        if self.reply is reply:
            self._do(ReleaseReply(reply.id))
        else:
            self.reply = reply
            self._do(StartReply(reply.id, self._context(reply),
                                reply.metrics, reply.state))
        self._do(Emit(TranscriptEvent(reply.user_text, final=True)))
        self.state = TurnState.REPLYING
        self._set_status(ProcessingStatus.PROCESSING)

    def _on_reply_ended(self, event: ReplyEnded) -> None:
        reply = self.reply
        if reply is None or reply.id != event.reply:
            return  # a reply already cut or dropped, ending late
        if self.overlap is not None:  # played out (or failed) under the user's speech
            self.overlap = None
            self.reply = None
            if reply.apology:
                return
            self.conversation.add_user(reply.user_text, heard_as=reply.heard_as)
            if event.error is None:
                self.conversation.add_assistant(reply.state.text)
                self._do(Emit(ResponseEvent(reply.state.text, final=True)))
            else:
                self._do(Emit(ErrorEvent(event.error.code, str(event.error), fatal=False)))
            self._finish_turn(reply.metrics)
            return
        if not self._released:  # a held reply failed before its turn ended: try again then
            if event.error is not None:
                log.warning("[%s] early reply failed: %s", self.session_id, event.error)
                self.reply = None
            return
        self.reply = None
        if reply.apology:
            self._listen()
            if reply.goodbye:
                self._do(EndSession("the user said nothing after the goodbye prompt"))
            return
        self.conversation.add_user(reply.user_text, heard_as=reply.heard_as)
        if event.error is not None:
            self._fail(event.error, reply.metrics)
            return
        self.conversation.add_assistant(reply.state.text)
        self._do(Emit(ResponseEvent(reply.state.text, final=True)))
        self._finish_turn(reply.metrics)
        self._listen()

    def _cut_reply(self, heard_s: float, *, by_speech: bool, join: bool = False) -> None:
        """Stop the released reply; the history keeps what the user heard of it, unless the
        user's words ``join`` the next turn (what they say now is the rest of them)."""
        reply = self.reply
        assert reply is not None and (self._released or self.overlap is not None)
        self.reply = None
        self.overlap = None
        self._do(CancelReply(reply.id, flush=True))
        if reply.apology:
            return
        state, metrics = reply.state, reply.metrics
        spoken = state.spoken_text(max(0.0, heard_s))
        metrics.interrupted = True
        if (heard_s <= 0 or join) and by_speech:
            # The user spoke again before hearing anything, or said the rest of their words:
            # their words join the next turn.
            self.carry_over = reply.user_text
        else:
            self.conversation.add_user(reply.user_text, heard_as=reply.heard_as)
            self.conversation.add_assistant(state.text, interrupted=True, spoken_text=spoken)
        self._do(Emit(ResponseEvent(state.text, final=True, interrupted=True,
                                    spoken_text=spoken)))
        self._finish_turn(metrics)

    def _stop_everything(self, heard_s: float) -> None:
        if self.overlap is not None:
            self._cut_reply(self.overlap, by_speech=False)
        elif self.state is TurnState.REPLYING:
            self._cut_reply(heard_s, by_speech=False)
        elif self.reply is not None:  # held: never heard
            self._do(CancelReply(self.reply.id, flush=False))
            self.reply = None
        if self.stream is not None:
            self._do(DropTranscript(self.stream))
            self.stream = None
        self._metrics = None
        self._scoring = None
        self.state = TurnState.LISTENING

    def _on_user_idle(self, event: UserIdle) -> None:
        """Say the line (in the history and the transcript: the LLM and the user see it)."""
        if self.state is not TurnState.LISTENING:
            return
        self.conversation.add_assistant(event.line)
        self._do(Emit(ResponseEvent(event.line, final=True)))
        self.reply = TurnReply(self._next_id(), "", TurnMetrics(turn=0), ReplyState(),
                            apology=True, goodbye=event.goodbye)
        self._do(SayLine(self.reply.id, event.line))
        self.state = TurnState.REPLYING
        self._set_status(ProcessingStatus.SPEAKING)

    def _resume(self, heard: str) -> None:
        """Only a backchannel, a cough or noise over the reply: it goes on where it paused."""
        assert self.reply is not None
        log.info("[%s] only %r over the reply: it goes on", self.session_id, heard)
        if heard:
            self._do(Emit(TranscriptEvent(heard, final=False)))
        self.overlap = None
        self.carry_over = ""
        self._do(ResumeReply(self.reply.id))
        self.state = TurnState.REPLYING
        audible = "first_audio_sent" in self.reply.metrics.marks
        self._set_status(ProcessingStatus.SPEAKING if audible else ProcessingStatus.PROCESSING)

    def _fail(self, error: ProviderError, metrics: TurnMetrics) -> None:
        """A provider gave up: tell the client, say sorry aloud, and keep listening."""
        log.warning("[%s] turn %d failed: %s", self.session_id, metrics.turn, error)
        self._do(Emit(ErrorEvent(error.code, str(error), fatal=False)))
        self._finish_turn(metrics)
        self.reply = TurnReply(self._next_id(), "", metrics, ReplyState(), apology=True)
        self._do(StartApology(self.reply.id))
        self.state = TurnState.REPLYING

    def _finish_turn(self, metrics: TurnMetrics) -> None:
        self._do(Emit(MetricsEvent(metrics.as_dict())))

    def _listen(self) -> None:
        self.state = TurnState.LISTENING
        self._set_status(ProcessingStatus.LISTENING)

    # ── plumbing ──────────────────────────────────────────────────────────────────────────
    def _do(self, command: Command) -> None:
        self._out.append(command)

    def _set_status(self, status: ProcessingStatus) -> None:
        if status is not self.status:
            self.status = status
            self._do(Emit(StatusEvent(status)))

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def _next_turn(self) -> int:
        """Turns are numbered when they start for real (a held reply, at its release)."""
        self._turns += 1
        return self._turns
