"""The turn coordinator on its own: events in, the exact commands out, on a fake clock; and a
property test that no sequence of events breaks its invariants (pipeline/turn.py, issue #12)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voice_agent.core.config import DEFAULT_BACKCHANNELS
from voice_agent.core.conversation import ConversationManager
from voice_agent.core.errors import ProviderError
from voice_agent.core.events import (ErrorEvent, MetricsEvent, ResponseEvent, StatusEvent,
                                     TranscriptEvent)
from voice_agent.core.messages import ChatMessage
from voice_agent.core.status import ProcessingStatus as S
from voice_agent.pipeline.backchannel import Backchannels
from voice_agent.pipeline.end_of_turn import EndOfTurnRule
from voice_agent.pipeline.reply import SpokenPiece
from voice_agent.pipeline.turn import TurnCoordinator, TurnState
from voice_agent.pipeline.turn_events import (CancelReply, CloseRequested, Command, PauseReply,
                                              EndOfTurnScored, ResumeReply, ScoreEndOfTurn,
                                              SetEndSilence,
                                              DropTranscript, Emit, FinalizeTranscript,
                                              InterimTick, InterruptRequested, OpenTranscript,
                                              Prefill, ReleaseReply, ReplyEnded, ReplyFirstAudio,
                                              RequestInterim, SpeechEnded, SpeechPaused,
                                              SpeechResumed, SpeechStarted, StartApology,
                                              StartReply, TextTyped, TranscriptFailed,
                                              TranscriptReceived, TurnInput)

SYSTEM = "be brief"


class Clocked:
    """A coordinator on a fake clock that starts at 100 s."""

    def __init__(self, *, prefill: bool = False) -> None:
        self.now = 100.0
        self.turns = TurnCoordinator(ConversationManager(SYSTEM), prefill=prefill,
                                     clock=lambda: self.now, session_id="t")
        self.turns.start()

    def at(self, now: float, event: TurnInput) -> list[Command]:
        self.now = now
        return self.turns.handle(event)

    def to_replying(self, text: str = "what time is it") -> StartReply:
        """Speech from 100 s, its end at 100.5 s, the turn's end at 101 s, the final at
        101.3 s: the reply (id 2, of stream 1) is started."""
        self.at(100.0, SpeechStarted())
        self.at(101.0, SpeechEnded(speech_end_s=1.2, speech_end_at=100.5))
        start = self.at(101.3, TranscriptReceived(1, text, final=True, covers_s=1.2,
                                                  speech_s=1.2))[0]
        assert isinstance(start, StartReply)
        return start

    def to_speaking(self, spoken: list[tuple[str, float, float]]) -> StartReply:
        """Replying, with these pieces of text spoken at these spans of the reply's audio."""
        start = self.to_replying()
        start.state.text = " ".join(text for text, _, _ in spoken)
        start.state.pieces = [SpokenPiece(*piece) for piece in spoken]
        self.at(101.5, ReplyFirstAudio(start.reply))
        return start

    def to_held(self, text: str = "what time is it") -> StartReply:
        """The user paused after speaking; an interim covering it all started a held reply."""
        self.at(100.0, SpeechStarted())
        self.at(101.0, SpeechPaused())
        cmds = self.at(101.2, TranscriptReceived(1, text, final=False, covers_s=1.3,
                                                 speech_s=1.2))
        start = cmds[-1]
        assert isinstance(start, StartReply) and start.held
        return start

    def history(self) -> list[tuple[str, str]]:
        return [(m["role"], m["text"]) for m in self.turns.conversation.history]


def status(s: S) -> Emit:
    return Emit(StatusEvent(s))


def kinds(cmds: list[Command]) -> list[type]:
    return [type(c) for c in cmds]


# ── the main transitions, command by command ──────────────────────────────────────────────


def test_start_shows_listening() -> None:
    turns = TurnCoordinator(ConversationManager(SYSTEM))
    assert turns.start() == [status(S.LISTENING)]
    assert turns.state is TurnState.LISTENING


def test_speech_start_opens_a_transcript_stream() -> None:
    c = Clocked()
    assert c.at(100.0, SpeechStarted()) == [OpenTranscript(1, hear_again=False)]
    assert c.turns.state is TurnState.USER_SPEAKING


def test_speech_start_while_the_user_speaks_keeps_the_open_stream() -> None:
    c = Clocked()
    c.at(100.0, SpeechStarted())
    assert c.at(100.5, SpeechStarted()) == []
    c.at(101.0, SpeechPaused())
    assert c.at(101.1, SpeechStarted()) == []
    assert c.turns.stream == 1


def test_first_speech_of_an_unstarted_session_also_shows_listening() -> None:
    turns = TurnCoordinator(ConversationManager(SYSTEM))
    assert turns.handle(SpeechStarted()) == [OpenTranscript(1), status(S.LISTENING)]


def test_end_of_turn_finalizes_the_transcript_and_shows_processing() -> None:
    c = Clocked()
    c.at(100.0, SpeechStarted())
    cmds = c.at(101.0, SpeechEnded(speech_end_s=1.2, speech_end_at=100.5))
    assert cmds == [FinalizeTranscript(1, 1.2), status(S.PROCESSING)]
    assert c.turns.state is TurnState.TRANSCRIBING


def test_final_transcript_starts_the_reply_then_shows_the_transcript() -> None:
    c = Clocked()
    c.at(100.0, SpeechStarted())
    c.at(101.0, SpeechEnded(speech_end_s=1.2, speech_end_at=100.5))
    cmds = c.at(101.3, TranscriptReceived(1, "what time is it", final=True, covers_s=1.2,
                                          speech_s=1.2))
    assert kinds(cmds) == [StartReply, Emit]
    start = cmds[0]
    assert isinstance(start, StartReply)
    assert (start.reply, start.held) == (2, False)
    assert start.messages == [ChatMessage("system", SYSTEM),
                              ChatMessage("user", "what time is it")]
    assert cmds[1] == Emit(TranscriptEvent("what time is it", final=True))
    assert c.turns.state is TurnState.REPLYING


def test_turn_metrics_are_marked_on_the_coordinators_clock() -> None:
    start = Clocked().to_replying()
    assert start.metrics.turn == 1
    assert start.metrics.marks == {"speech_end": 100.5, "end_of_turn": 101.0,
                                   "transcript_final": 101.3}
    m = start.metrics.as_dict()
    assert (m["end_of_turn_delay_ms"], m["stt_ms"], m["user_speech_ms"]) == (500.0, 300.0, 1200.0)


def test_reply_played_out_is_kept_and_the_agent_listens() -> None:
    c = Clocked()
    start = c.to_replying()
    assert c.at(101.5, ReplyFirstAudio(start.reply)) == [status(S.SPEAKING)]
    start.state.text = "It is noon."
    cmds = c.at(103.0, ReplyEnded(start.reply))
    assert kinds(cmds) == [Emit, Emit, Emit]
    assert cmds[0] == Emit(ResponseEvent("It is noon.", final=True))
    assert isinstance(cmds[1].event, MetricsEvent) and cmds[1].event.metrics["turn"] == 1
    assert cmds[2] == status(S.LISTENING)
    assert c.history() == [("user", "what time is it"), ("assistant", "It is noon.")]


def test_barge_in_cuts_the_reply_where_it_was_heard_and_listens() -> None:
    c = Clocked()
    start = c.to_speaking([("one two three", 0.0, 0.3), ("four five", 0.3, 0.5)])
    cmds = c.at(102.0, SpeechStarted(heard_s=0.45))
    assert cmds[:2] == [CancelReply(start.reply, flush=True),
                        Emit(ResponseEvent("one two three four five", final=True,
                                           interrupted=True, spoken_text="one two three four"))]
    assert isinstance(cmds[2], Emit) and isinstance(cmds[2].event, MetricsEvent)
    assert cmds[2].event.metrics["interrupted"] is True
    assert cmds[3:] == [OpenTranscript(3), status(S.LISTENING)]
    assert c.history() == [("user", "what time is it"), ("assistant", "one two three four")]
    assert c.turns.state is TurnState.USER_SPEAKING


def test_barge_in_before_anything_was_heard_carries_the_question_over() -> None:
    c = Clocked()
    start = c.to_replying("what is")
    cmds = c.at(101.5, SpeechStarted(heard_s=0.0))
    assert cmds[0] == CancelReply(start.reply, flush=True)
    assert c.history() == []
    c.at(102.0, SpeechEnded(speech_end_s=0.8, speech_end_at=101.9))
    cmds = c.at(102.2, TranscriptReceived(3, "the time", final=True, covers_s=0.8,
                                          speech_s=0.8))
    assert isinstance(cmds[0], StartReply)
    assert cmds[0].messages[-1] == ChatMessage("user", "what is the time")
    assert cmds[1] == Emit(TranscriptEvent("what is the time", final=True))


def test_pause_asks_for_an_interim_and_one_covering_the_speech_starts_a_held_reply() -> None:
    c = Clocked()
    c.at(100.0, SpeechStarted())
    assert c.at(101.0, SpeechPaused()) == [RequestInterim(1, decisive=True)]
    cmds = c.at(101.2, TranscriptReceived(1, "what time", final=False, covers_s=1.3,
                                          speech_s=1.2))
    assert kinds(cmds) == [Emit, StartReply]
    assert cmds[0] == Emit(TranscriptEvent("what time", final=False))
    assert isinstance(cmds[1], StartReply) and (cmds[1].reply, cmds[1].held) == (2, True)
    assert cmds[1].metrics.marks == {"transcript_final": 101.2}


def test_interim_missing_later_speech_asks_for_another_instead_of_a_reply() -> None:
    c = Clocked()
    c.at(100.0, SpeechStarted())
    c.at(101.0, SpeechPaused())
    cmds = c.at(101.2, TranscriptReceived(1, "what", final=False, covers_s=0.6, speech_s=1.2))
    assert cmds == [Emit(TranscriptEvent("what", final=False)), RequestInterim(1, decisive=True)]


def test_resume_drops_the_held_reply_unflushed() -> None:
    c = Clocked()
    held = c.to_held()
    assert c.at(101.4, SpeechResumed()) == [CancelReply(held.reply, flush=False)]
    assert c.turns.state is TurnState.USER_SPEAKING and c.turns.reply is None


def test_end_of_turn_releases_the_held_reply_without_a_final_transcript() -> None:
    c = Clocked()
    held = c.to_held()
    cmds = c.at(101.5, SpeechEnded(speech_end_s=1.2, speech_end_at=101.0))
    assert cmds == [DropTranscript(1), ReleaseReply(held.reply),
                    Emit(TranscriptEvent("what time is it", final=True)), status(S.PROCESSING)]
    assert held.metrics.turn == 1 and held.metrics.transcript_reused
    assert held.metrics.marks == {"transcript_final": 101.2, "speech_end": 101.0,
                                  "end_of_turn": 101.5}


def test_interrupt_cuts_the_reply_and_listens() -> None:
    c = Clocked()
    start = c.to_speaking([("one two three", 0.0, 0.3)])
    cmds = c.at(102.0, InterruptRequested(heard_s=0.3))
    assert cmds[:2] == [CancelReply(start.reply, flush=True),
                        Emit(ResponseEvent("one two three", final=True, interrupted=True,
                                           spoken_text="one two three"))]
    assert cmds[-1] == status(S.LISTENING) and c.turns.state is TurnState.LISTENING


def test_failed_reply_is_told_and_apologised_for() -> None:
    c = Clocked()
    start = c.to_replying()
    error = ProviderError("fake-llm", "boom")
    cmds = c.at(102.0, ReplyEnded(start.reply, error=error))
    assert cmds[0] == Emit(ErrorEvent("provider_error", str(error), fatal=False))
    assert isinstance(cmds[1], Emit) and isinstance(cmds[1].event, MetricsEvent)
    assert cmds[2:] == [StartApology(3)]
    assert c.history() == [("user", "what time is it")]


def test_empty_final_transcript_is_no_turn() -> None:
    c = Clocked()
    c.at(100.0, SpeechStarted())
    c.at(101.0, SpeechEnded(speech_end_s=1.2, speech_end_at=100.5))
    cmds = c.at(101.3, TranscriptReceived(1, "", final=True, covers_s=1.2, speech_s=1.2))
    assert cmds == [status(S.LISTENING)] and c.turns.state is TurnState.LISTENING


def test_results_of_other_streams_and_replies_are_ignored() -> None:
    c = Clocked()
    start = c.to_replying()
    assert c.at(102.0, TranscriptReceived(1, "late", final=True, covers_s=1, speech_s=1)) == []
    assert c.at(102.0, ReplyFirstAudio(start.reply + 7)) == []
    assert c.at(102.0, ReplyEnded(start.reply + 7)) == []
    assert c.turns.state is TurnState.REPLYING


def test_nothing_is_commanded_after_close() -> None:
    c = Clocked()
    start = c.to_speaking([("one two three", 0.0, 0.3)])
    cmds = c.at(102.0, CloseRequested(heard_s=0.3))
    assert cmds[0] == CancelReply(start.reply, flush=True)
    assert c.turns.state is TurnState.CLOSED
    for event in [SpeechStarted(), TextTyped("hi"), ReplyEnded(start.reply), InterimTick()]:
        assert c.at(103.0, event) == []


# ── any sequence of events ────────────────────────────────────────────────────────────────

KINDS = (["speech_start"] * 3 + ["pause"] * 3 + ["resume"] + ["end"] * 3 + ["tick"]
         + ["interim"] * 4 + ["final"] * 3 + ["transcript_failed"] + ["first_audio"] * 2
         + ["reply_ended"] * 3 + ["typed", "interrupt"] + ["scored"] * 2) * 2 + ["close"]
"""Weighted so that sequences often get far into a turn (held replies, transcripts being
finished, apologies) before a close ends them."""


@dataclass(frozen=True)
class Spec:
    """One event to send; each kind reads the fields it needs. Ids are resolved when it is
    sent: the current stream or reply, a stale one, or one never seen."""

    kind: str
    which: str
    text: str
    covers_all: bool
    """A transcript covering all the speech so far."""
    heard_s: float
    flag: bool
    """A reply that failed; a transcript failure of the final."""

    @classmethod
    def of(cls, kind: str, variant: int) -> Spec:
        """The variant number picks the fields (one draw instead of five: generation is
        most of this test's time); 0, where shrinking goes, is the plainest."""
        variant, which = divmod(variant, 5)
        variant, text = divmod(variant, 3)
        variant, covers = divmod(variant, 3)
        flag, heard = divmod(variant, 2)
        return cls(kind, ["current", "current", "current", "stale", "unknown"][which],
                   ["what time is it", "uh huh", ""][text], covers < 2,
                   [0.0, 0.4][heard], bool(flag))


EVENTS = st.builds(Spec.of, st.sampled_from(KINDS), st.integers(0, 5 * 3 * 3 * 2 * 2 - 1))


@dataclass
class Ledger:
    """What the commands so far did to streams and replies."""

    opened: list[int] = field(default_factory=list)
    finalized: set[int] = field(default_factory=set)
    dropped: set[int] = field(default_factory=set)
    finished: set[int] = field(default_factory=set)
    """Streams whose final result (or final failure) was delivered."""
    started: list[int] = field(default_factory=list)
    held: set[int] = field(default_factory=set)
    released: set[int] = field(default_factory=set)
    cancelled: set[int] = field(default_factory=set)
    ended: set[int] = field(default_factory=set)
    paused: set[int] = field(default_factory=set)

    def is_open(self, sid: int) -> bool:
        return sid in self.opened and sid not in self.finalized | self.dropped

    def take(self, cmd: Command) -> None:
        match cmd:
            case OpenTranscript(stream=s):
                assert s not in self.opened, cmd
                assert not any(self.is_open(o) for o in self.opened), "two open streams"
                self.opened.append(s)
            case RequestInterim(stream=s) | FinalizeTranscript(stream=s):
                assert self.is_open(s), cmd
                if isinstance(cmd, FinalizeTranscript):
                    self.finalized.add(s)
            case DropTranscript(stream=s):
                assert s in self.opened and s not in self.dropped, cmd
                self.dropped.add(s)
            case StartReply(reply=r) | StartApology(reply=r):
                assert r not in self.started, cmd
                self.started.append(r)
                if isinstance(cmd, StartReply) and cmd.held:
                    self.held.add(r)
                else:
                    self.released.add(r)
            case ReleaseReply(reply=r):
                assert r in self.held and r not in self.released | self.cancelled, cmd
                self.released.add(r)
            case CancelReply(reply=r, flush=flush):
                assert r in self.started and r not in self.cancelled, cmd
                assert flush == (r in self.released), cmd
                self.cancelled.add(r)
                self.paused.discard(r)
            case PauseReply(reply=r):
                assert r in self.released and r not in self.cancelled | self.paused, cmd
                self.paused.add(r)
            case ResumeReply(reply=r):
                assert r in self.paused and r not in self.cancelled, cmd
                self.paused.discard(r)
            case ScoreEndOfTurn(stream=s):
                assert self.is_open(s), cmd
            case Prefill() | Emit() | SetEndSilence():
                pass
            case _:
                raise AssertionError(f"unknown command {cmd!r}")


def pick(which: str, current: int | None, known: list[int]) -> int:
    if which == "current" and current is not None:
        return current
    if which == "stale" and known:
        return known[-2] if len(known) > 1 else known[0]  # the one before: just cut, dropped
    return 999


def to_event(spec: Spec, turns: TurnCoordinator, ledger: Ledger) -> TurnInput:
    stream = pick(spec.which, turns.stream, ledger.opened)
    reply = pick(spec.which, turns.reply and turns.reply.id, ledger.started)
    error = ProviderError("fake", "boom")
    match spec.kind:
        case "speech_start":
            return SpeechStarted(spec.heard_s)
        case "pause":
            return SpeechPaused()
        case "resume":
            return SpeechResumed()
        case "end":
            return SpeechEnded(speech_end_s=1.0, speech_end_at=0.0)
        case "tick":
            return InterimTick()
        case "interim" | "final":
            return TranscriptReceived(stream, spec.text, final=spec.kind == "final",
                                      covers_s=1.0 if spec.covers_all else 0.5, speech_s=1.0)
        case "transcript_failed":
            return TranscriptFailed(stream, error, final=spec.flag)
        case "first_audio":
            return ReplyFirstAudio(reply)
        case "reply_ended":
            return ReplyEnded(reply, error if spec.flag else None)
        case "typed":
            return TextTyped(spec.text or "hello")
        case "scored":  # of the latest words, or of other ones (an older interim's)
            words = turns._latest if spec.covers_all else spec.text
            return EndOfTurnScored(stream, [0.9, 0.3, 0.01, None][int(spec.heard_s > 0) * 2
                                                               + int(spec.flag)], words)
        case "interrupt":
            return InterruptRequested(spec.heard_s)
        case "close":
            return CloseRequested(spec.heard_s)
    raise AssertionError(spec)


def check_invariants(turns: TurnCoordinator, ledger: Ledger) -> None:
    state, reply, stream = turns.state, turns.reply, turns.stream
    # pipeline/turn.py: a held reply only in USER_PAUSED (or early, in USER_SPEAKING), a
    # released one only in REPLYING.
    # A released reply paused under the user's speech (overlap) while they speak, pause or
    # are transcribed; it is the only one paused.
    if reply is not None:
        assert reply.id in ledger.started and reply.id not in ledger.cancelled
        if turns.overlap is not None:
            assert state in (TurnState.USER_SPEAKING, TurnState.USER_PAUSED,
                             TurnState.TRANSCRIBING), state
            assert reply.id in ledger.released and ledger.paused == {reply.id}
        elif reply.early:
            assert state in (TurnState.USER_SPEAKING, TurnState.USER_PAUSED), state
            assert reply.id not in ledger.released
        else:
            assert state in (TurnState.USER_PAUSED, TurnState.REPLYING), state
            assert (reply.id in ledger.released) == (state is TurnState.REPLYING)
    else:
        assert turns.overlap is None
    if turns.overlap is None:
        assert not ledger.paused - ledger.ended, ledger.paused
    # A reply waiting for its end-of-turn score only in a pause, and none started beside it.
    if turns._scoring is not None:
        assert state is TurnState.USER_PAUSED and reply is None, state
    assert (state is TurnState.REPLYING) == (
        reply is not None and reply.id in ledger.released and turns.overlap is None)
    # An open stream only in USER_SPEAKING / USER_PAUSED, a finishing one only in TRANSCRIBING.
    if state in (TurnState.USER_SPEAKING, TurnState.USER_PAUSED):
        assert stream is not None and ledger.is_open(stream)
    elif state is TurnState.TRANSCRIBING:
        assert stream is not None and stream in ledger.finalized - ledger.dropped
    else:
        assert stream is None
    # Nothing is left running unowned: every reply is the current one, cancelled or over, and
    # every stream the current one, dropped or finished.
    for r in ledger.started:
        assert (reply is not None and r == reply.id) or r in ledger.cancelled | ledger.ended, r
    for s in ledger.opened:
        assert s == stream or s in ledger.dropped | ledger.finished, s


@pytest.mark.parametrize("backchannels", [(), DEFAULT_BACKCHANNELS],
                         ids=["cut-at-once", "pause-first"])
@settings(max_examples=250, deadline=None)
@given(specs=st.lists(EVENTS, min_size=20, max_size=60))
def test_no_sequence_of_events_breaks_the_invariants(specs: list[Spec],
                                                     backchannels: tuple[str, ...]) -> None:
    now = [0.0]
    turns = TurnCoordinator(ConversationManager(SYSTEM), prefill=True, clock=lambda: now[0],
                            backchannels=Backchannels(backchannels),
                            end_of_turn=EndOfTurnRule() if backchannels else None,
                            preempt=True)
    ledger = Ledger()
    turns.start()
    closed = False
    for spec in specs:
        now[0] += 0.1
        event = to_event(spec, turns, ledger)
        finishing = turns.stream if turns.state is TurnState.TRANSCRIBING else None
        cmds = turns.handle(event)
        if closed:
            assert cmds == [], (event, cmds)
        for cmd in cmds:
            ledger.take(cmd)
        match event:
            case TranscriptReceived(final=True, stream=s) | TranscriptFailed(final=True, stream=s):
                if s == finishing:
                    ledger.finished.add(s)
            case ReplyEnded(reply=r, error=error) if r in ledger.released or error is not None:
                ledger.ended.add(r)  # a held reply only ends early by failing
                ledger.paused.discard(r)  # a paused one may end too (it had played out)
            case CloseRequested():
                closed = True
                assert turns.state is TurnState.CLOSED
        check_invariants(turns, ledger)
