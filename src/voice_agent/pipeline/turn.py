"""The turn coordinator: when the agent listens, answers, holds back and stops. No I/O.

A state machine over one session, driven by typed events (:mod:`.turn_events`) and answering
with commands that :class:`~voice_agent.pipeline.agent.VoicePipeline` carries out. It owns the
conversation history, because what the history gets (what the user said, what they heard of a
reply) is decided here. Time comes from ``clock``, so tests run it on a fake one.

    LISTENING ──speech──► USER_SPEAKING ──pause──► USER_PAUSED ──resume──► USER_SPEAKING
        ▲                       │ an interim scored   │  a transcript covering all the
        │                       │ complete: an early  │  speech: a reply is started, held
        │                       │ reply, held         │  (or the early one kept: same words)
        │                       ▼  end of turn        ▼  end of turn: the held reply is released
        │                 TRANSCRIBING ──final──► REPLYING ──played out──► LISTENING
        │                       │ (empty: no turn)    │
        └───────────────────────┘                     └──speech (barge-in)──► USER_SPEAKING

A barge-in (speech, ``interrupt``, typed text, close) is a transition, not a state: the cut is
recorded at once, from the playback position the event carries, and the reply's task is
cancelled in the background with a deadline. Nothing waits for it, so a reply that does not stop
can never leave the session deaf, and its late audio is muted by the pipeline.

Invariants: a held reply exists only in USER_PAUSED, or in USER_SPEAKING if it is early (made
from an interim, not confirmed by a pause's transcript); a released reply only in REPLYING; an open
transcript stream only in USER_SPEAKING / USER_PAUSED; a finishing one only in TRANSCRIBING.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..core.conversation import ConversationManager
from ..core.events import TranscriptEvent
from ..core.status import ProcessingStatus
from ..core.words import same_words
from .backchannel import Backchannels
from .end_of_turn import (EndOfTurnRule, OtherHearings, Verdicts, looks_cut_off,
                          looks_finished)
from .metrics import TurnMetrics
from .turn_events import (CloseRequested, Command, DropTranscript, Emit, EndOfTurnScored,
                          FinalizeTranscript, InterimTick, InterruptRequested, OpenTranscript,
                          PauseReply, Prefill, ReplyEnded, ReplyFirstAudio, RequestInterim,
                          SetEndSilence, SpeechEnded, SpeechPaused, SpeechResumed,
                          SpeechStarted, TextTyped, TranscriptFailed, TranscriptReceived,
                          TurnInput, UserIdle, WithdrawInterim)
from .turn_scoring import ScoreSide
from .turn_state import TurnReply, TurnState

log = logging.getLogger(__name__)

PREFILL_EVERY_WORDS = 3
"""New words an interim must add before the LLM reads it again: every prefill re-reads the chat
template's tail (~5 tokens), so one per word would cost more than it saves."""


class TurnCoordinator(ScoreSide):
    def __init__(self, conversation: ConversationManager, *, prefill: bool = True,
                 clock: Callable[[], float] = time.monotonic, session_id: str = "",
                 backchannels: Backchannels | None = None,
                 end_of_turn: EndOfTurnRule | None = None,
                 end_silence_ms: float = 500.0, score_early: bool = False,
                 preempt: bool = False, hearings_max_words: int = 0) -> None:
        self.conversation = conversation
        self.backchannels = backchannels if backchannels is not None else Backchannels(())
        """Speech over a reply pauses it until its words are known (none: it cuts at once)."""
        self.end_of_turn = end_of_turn
        """Scores each pause's transcript to decide how long the silence must be (None: the
        fixed ``end_silence_ms``)."""
        self.end_silence_ms = end_silence_ms
        self.score_early = (score_early or preempt) and end_of_turn is not None
        """Score interims while the user speaks: a pause whose words were scored needs no
        score of its own (the end of the turn is known ~70-150 ms sooner)."""
        self.preempt = preempt and self.score_early
        """Start an early reply to interim words scored complete."""
        self.light = False
        """Other sessions are in a turn too (set by the pipeline before each event): no
        scores, prefills or early replies while the user speaks."""
        self.hearings = True
        """The LLM reads the STT's other hearings beside the words (set by the pipeline before
        each event: off when enough sessions are in a turn at once)."""
        self.hearings_max_words = hearings_max_words
        """Longer transcripts go to the LLM without their other hearings (0: any length)."""
        self.pause_waits = True
        """A pause's words are scored before the turn ends, however whole they look (set by
        the pipeline before each event: off when enough sessions are in a turn at once,
        pipeline.pause_unscored_at_sessions; then only words that look cut off are)."""
        self._interim_after_score = False
        """A pause came while a score was on its way: its transcript is asked for after it."""
        self.verdicts = Verdicts()
        """The end-of-turn scores of this utterance's transcripts, by their words."""
        self._latest = ""
        """The open stream's latest interim (with the carried-over words)."""
        self._scoring: TurnReply | None = None
        """The reply prepared from the pause's transcript, waiting for its score to start."""
        self.others = OtherHearings()
        """The pause's other hearings, scored when the best one's words were unsure."""
        self.overlap: float | None = None
        """The released reply is paused under the user's speech, heard up to this many
        seconds; the user's words decide whether it goes on or is cut."""
        self.prefill = prefill
        self.clock = clock
        self.session_id = session_id
        self.state = TurnState.LISTENING
        self.status = ProcessingStatus.IDLE
        self.stream: int | None = None
        """The open (USER_*) or finishing (TRANSCRIBING) transcript stream."""
        self.reply: TurnReply | None = None
        """The held (USER_PAUSED) or released (REPLYING) reply."""
        self.carry_over = ""
        """Words of a turn cut off by the user before the agent said anything: they join the
        next turn."""
        self._metrics: TurnMetrics | None = None  # the turn being transcribed
        self._prefilled_words = 0
        self._turns = 0
        self._ids = 0
        self._out: list[Command] = []

    @property
    def wants_interims(self) -> bool:
        """Interims on the timer help while the user speaks. In a pause the decisive one was
        asked for (and is asked again if it missed speech): more would transcribe silence and
        take the cores from the pause's score (measured: the score took 0.3-2.5 s instead of
        ~0.1 s with interims and a reply around it)."""
        return self.state is TurnState.USER_SPEAKING

    @property
    def idle(self) -> bool:
        return self.state in (TurnState.LISTENING, TurnState.CLOSED)

    def start(self) -> list[Command]:
        self._out = []
        self._set_status(ProcessingStatus.LISTENING)
        return self._out

    def handle(self, event: TurnInput) -> list[Command]:
        """Take one event; return the commands it leads to, in order."""
        self._out = []
        if self.state is TurnState.CLOSED:
            return self._out
        match event:
            case SpeechStarted():
                self._on_speech_started(event)
            case SpeechPaused():
                self._on_paused()
            case SpeechResumed():
                self._on_resumed()
            case SpeechEnded():
                self._on_speech_ended(event)
            case InterimTick():
                if self.wants_interims and self.stream is not None:
                    self._do(RequestInterim(self.stream))
            case TranscriptReceived(final=False):
                self._on_interim(event)
            case TranscriptReceived(final=True):
                self._on_final(event)
            case TranscriptFailed():
                self._on_transcript_failed(event)
            case TextTyped():
                self._on_text(event)
            case InterruptRequested():
                self._on_interrupt(event)
            case ReplyFirstAudio():
                if self.reply is not None and self.reply.id == event.reply and self._released \
                        and self.overlap is None:
                    self._set_status(ProcessingStatus.SPEAKING)
            case ReplyEnded():
                self._on_reply_ended(event)
            case CloseRequested():
                self._on_close(event)
            case UserIdle():
                self._on_user_idle(event)
            case EndOfTurnScored():
                self._on_scored(event)
        return self._out

    # ── the user's side ───────────────────────────────────────────────────────────────────
    def _on_speech_started(self, event: SpeechStarted) -> None:
        hear_again = False
        if self.state in (TurnState.USER_SPEAKING, TurnState.USER_PAUSED):
            return  # already in the utterance: a second stream would leave the first unclosed
        if self.state is TurnState.TRANSCRIBING:
            # The user only paused: hear the whole utterance again with what follows.
            assert self.stream is not None
            self._do(DropTranscript(self.stream))
            log.info("[%s] more speech before the transcript was final: heard again",
                     self.session_id)
            hear_again = True
        elif self.state is TurnState.REPLYING and self.backchannels:
            assert self.reply is not None
            log.info("[%s] speech over the reply: paused", self.session_id)
            self.overlap = event.heard_s
            self._do(PauseReply(self.reply.id))
        elif self.state is TurnState.REPLYING:
            log.info("[%s] barge-in", self.session_id)
            self._cut_reply(event.heard_s, by_speech=True)
        self.stream = self._next_id()
        self._prefilled_words = 0
        self.verdicts.clear()
        self._latest = ""
        self._interim_after_score = False
        self.others.clear()
        self._do(OpenTranscript(self.stream, hear_again=hear_again))
        self.state = TurnState.USER_SPEAKING
        self._set_status(ProcessingStatus.LISTENING)

    def _on_paused(self) -> None:
        if self.state is TurnState.USER_SPEAKING and self.stream is not None:
            self.state = TurnState.USER_PAUSED
            # Not beside a score on its way: Whisper's beam search and llama.cpp's prompt read
            # on the same 2 cores took ~2 s each instead of ~0.2 and ~0.1 (in-process, quiet
            # machine); one after the other is ~0.3 s.
            self._interim_after_score = self.verdicts.pending is not None
            if not self._interim_after_score:
                self._do(RequestInterim(self.stream, decisive=True))
            if self.end_of_turn is not None and self.overlap is None:
                # The pause's words (and their score) are on their way: on a slow machine or
                # beside other sessions Whisper took 0.6-1.6 s for them, and the fixed 500 ms
                # ended the turn before any score (half a question answered as a whole one).
                self._await_words()

    def _on_resumed(self) -> None:
        if self.state is not TurnState.USER_PAUSED:
            return
        self.state = TurnState.USER_SPEAKING
        if self.light and self.stream is not None:
            # Under load 13 of 53 Whisper passes were a pause inside a question, all for
            # nothing: one still waiting behind other sessions' is withdrawn.
            self._do(WithdrawInterim(self.stream))
        self._interim_after_score = False
        self._scoring = None  # the pause's words were not the turn: score the next pause
        self.others.clear()
        if self.reply is not None and self.overlap is None:  # a held reply, never heard: drop it
            self._drop_held("the user went on")

    def _on_speech_ended(self, event: SpeechEnded) -> None:
        if self.state not in (TurnState.USER_SPEAKING, TurnState.USER_PAUSED):
            return
        assert self.stream is not None
        self._scoring = None  # the turn ended before its score: the final answers it
        held = self.reply if self.overlap is None else None
        if held is not None and held.early:  # its words were never confirmed: the final decides
            self._drop_held("the turn ended before its words were confirmed")
            held = None
        metrics = held.metrics if held is not None else TurnMetrics(turn=0, source="voice")
        metrics.turn = self._next_turn()
        metrics.mark("speech_end", event.speech_end_at)
        metrics.mark("end_of_turn", self.clock())
        metrics.user_speech_ms = event.speech_end_s * 1000
        if held is not None:  # prepared during the pause: heard now
            self._do(DropTranscript(self.stream))
            self.stream = None
            self.carry_over = ""
            self._release(held)
            return
        self._metrics = metrics
        self._do(FinalizeTranscript(self.stream, event.speech_end_s))
        self.state = TurnState.TRANSCRIBING
        self._set_status(ProcessingStatus.PROCESSING)

    def _on_interim(self, event: TranscriptReceived) -> None:
        if event.stream != self.stream or self.state not in (TurnState.USER_SPEAKING,
                                                             TurnState.USER_PAUSED):
            return  # a stale result of a dropped or finished stream
        if not event.text:
            self._no_words_coming()
            return
        self._do(Emit(TranscriptEvent(event.text, final=False)))
        rest = self._answers_cut_off_words()
        if self.overlap is not None and not self.backchannels.only(event.text, one_word=not rest):
            # words, not an "uh huh": a barge-in
            self._cut_reply(self.overlap, by_speech=True, join=rest)
        text = f"{self.carry_over} {event.text}".strip()
        self._latest = text
        if self.state is TurnState.USER_SPEAKING:
            self._while_speaking(event, text)
            return
        early = self.reply if self.reply is not None and self.reply.early else None
        if (self.reply is not None and early is None) or self._scoring is not None:
            return  # this pause's reply is made, or waits for its score
        if event.covers_s < event.speech_s:  # speech came in after this audio: transcribe again
            self._do(RequestInterim(event.stream, decisive=True))
            return
        self.others.start(self._other_hearings(event))
        if early is not None:  # all the speech so far, and a reply made early: same words?
            if same_words(early.user_text, text):
                log.info("[%s] the early reply to %r is kept", self.session_id, text)
                early.early, early.user_text = False, text
                self._verdict(early, self.verdicts.get(text))
                return
            self._drop_held(f"the pause's transcript is {text!r}")
        metrics = TurnMetrics(turn=0, source="voice", transcript_reused=True)
        metrics.mark("transcript_final", self.clock())
        reply = self._new_reply(text, metrics, stream=event.stream, heard_as=self._hearings(event))
        if self.end_of_turn is None:
            self._start_held(reply)
        elif self.verdicts.known(text):  # scored while the user spoke: no second score
            self._verdict(reply, self.verdicts.get(text))
        elif not self.pause_waits and looks_finished(text):
            # Others are in a turn: words that look whole are not scored (the score came too
            # late to help, and waiting for it cost four sessions' p95 +20-35%); the fixed
            # silence ends the turn. Words that look cut off still wait for their score.
            log.info("[%s] end of turn: %r looks whole, unscored (others are in a turn)",
                     self.session_id, text)
            self._start_held(reply)
            self._do(SetEndSilence(self.end_silence_ms))
        else:  # is it the whole turn? The reply starts once the score is known
            self._scoring = reply
            self._await_words()
            if not self.verdicts.is_pending(text):  # else the score asked while they spoke
                self._score(event.stream, text)

    def _while_speaking(self, event: TranscriptReceived, text: str) -> None:
        """An interim while the user speaks: drop an early reply whose words it outgrew; score
        new words (which also reads them into the LLM's cache, as a prefill would) and answer
        early when they are a whole question; else prefill now and then."""
        if self.reply is not None and self.reply.early and not same_words(self.reply.user_text,
                                                                          text):
            self._drop_held("the user said more")
        if self.light:
            return  # others are in a turn: nothing spent on these words before the pause
        if self.score_early and self.overlap is None and self.reply is None:
            if self.verdicts.known(text):
                self._preempt(event.stream, text)
                return
            if self.verdicts.pending is None:
                self._prefilled_words = len(event.text.split())
                self._score(event.stream, text)
                return
        if self.prefill:
            words = len(event.text.split())
            if words >= self._prefilled_words + PREFILL_EVERY_WORDS:
                self._prefilled_words = words
                self._do(Prefill(self.conversation.context(text)))

    def _on_final(self, event: TranscriptReceived) -> None:
        if self.state is not TurnState.TRANSCRIBING or event.stream != self.stream:
            return
        metrics, self._metrics = self._metrics, None
        assert metrics is not None
        self.stream = None
        if self.overlap is not None:
            rest = self._answers_cut_off_words()
            if self.backchannels.only(event.text, one_word=not rest):
                self._resume(event.text)
                return
            self._cut_reply(self.overlap, by_speech=True, join=rest)
        text = f"{self.carry_over} {event.text}".strip()
        heard_as = self._hearings(event)
        self.carry_over = ""
        if not text:  # noise, a cough, or words the STT could not make out: no turn
            self.state = TurnState.LISTENING
            self._set_status(ProcessingStatus.LISTENING)
            return
        metrics.transcript_reused = event.reused
        metrics.mark("transcript_final", self.clock())
        self._release(self._new_reply(text, metrics, heard_as=heard_as))

    def _answers_cut_off_words(self) -> bool:
        """The reply spoken over answers words that stop where no sentence can: what the user
        says over it is their end ("what is the largest city in" ... "Canada."), one word
        too (not a misheard "uh huh"), and joins them in the next turn."""
        return self.reply is not None and looks_cut_off(self.reply.user_text)

    def _on_transcript_failed(self, event: TranscriptFailed) -> None:
        if not event.final:
            log.warning("[%s] interim transcript failed: %s", self.session_id, event.error)
            self._no_words_coming()
            return
        if self.state is not TurnState.TRANSCRIBING or event.stream != self.stream:
            return
        metrics, self._metrics = self._metrics, None
        assert metrics is not None
        self.stream = None
        if self.overlap is not None:  # what was said over the reply is unknown: it goes on
            self._resume("")
            return
        self._fail(event.error, metrics)

    def _on_text(self, event: TextTyped) -> None:
        """A typed message is a whole turn: it supersedes whatever was going on."""
        self._stop_everything(event.heard_s)
        metrics = TurnMetrics(turn=self._next_turn(), source="text")
        metrics.mark("end_of_turn", self.clock())
        metrics.mark("transcript_final", self.clock())
        self._release(self._new_reply(event.text.strip(), metrics))

    def _on_interrupt(self, event: InterruptRequested) -> None:
        if self.overlap is not None:  # the user goes on speaking: only the reply ends
            self._cut_reply(self.overlap, by_speech=False)
        elif self.state is TurnState.REPLYING:
            self._cut_reply(event.heard_s, by_speech=False)
            self.state = TurnState.LISTENING
            self._set_status(ProcessingStatus.LISTENING)

    def _on_close(self, event: CloseRequested) -> None:
        self._stop_everything(event.heard_s)
        self.state = TurnState.CLOSED
        self.status = ProcessingStatus.IDLE
