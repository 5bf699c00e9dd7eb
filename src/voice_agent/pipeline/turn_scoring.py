"""The end-of-turn scores of the turn coordinator: asked for, answered, and what they decide (how
long the pause must last, whether the reply prepared at the pause starts). No I/O.

:class:`ScoreSide` sits between :class:`~voice_agent.pipeline.turn_replies.ReplySide` and
:class:`~voice_agent.pipeline.turn.TurnCoordinator`, which asks for the scores while it reads
the user's side top to bottom (see its ``_on_interim`` and ``_while_speaking``).
"""

from __future__ import annotations

import logging

from ..core.words import same_words
from .end_of_turn import EndOfTurnRule, OtherHearings, Verdicts
from .metrics import TurnMetrics
from .turn_events import EndOfTurnScored, RequestInterim, ScoreEndOfTurn, SetEndSilence
from .turn_replies import ReplySide
from .turn_state import TurnReply, TurnState

log = logging.getLogger("voice_agent.pipeline.turn")


class ScoreSide(ReplySide):
    # The coordinator's state this side reads and changes (set in TurnCoordinator.__init__).
    end_of_turn: EndOfTurnRule | None
    end_silence_ms: float
    preempt: bool
    verdicts: Verdicts
    others: OtherHearings
    _latest: str
    _interim_after_score: bool

    def _score(self, stream: int, text: str) -> None:
        self.verdicts.asked(text)
        self._do(ScoreEndOfTurn(stream, self.conversation.context(text), text))

    def _await_words(self) -> None:
        """The pause's words, or their score, are on their way: the turn does not end before
        them (``verdict_wait_ms`` of silence at most)."""
        assert self.end_of_turn is not None
        self._do(SetEndSilence(max(self.end_of_turn.verdict_wait_ms, self.end_silence_ms)))

    def _no_words_coming(self) -> None:
        """The pause's transcript came empty (noise) or failed: nothing to score, so the fixed
        silence ends the turn again."""
        if self.state is TurnState.USER_PAUSED and self.end_of_turn is not None:
            self._do(SetEndSilence(self.end_silence_ms))

    def _preempt(self, stream: int, text: str) -> None:
        """Start the reply to a question the user has not paused after yet, held: its first
        audio is ready when the pause confirms the words (item 5 of issue #14)."""
        p = self.verdicts.get(text)
        assert self.end_of_turn is not None
        if not self.preempt or p is None or p < self.end_of_turn.done_p or self.reply is not None:
            return
        metrics = TurnMetrics(turn=0, source="voice", transcript_reused=True, preemptive=True)
        metrics.mark("transcript_final", self.clock())
        reply = self._new_reply(text, metrics, stream=stream)
        reply.early = True
        self._start_held(reply)

    def _on_scored(self, event: EndOfTurnScored) -> None:
        if event.stream != self.stream:
            return  # a score of a dropped or finished stream
        self.verdicts.got(event.text, event.probability)
        if self._interim_after_score and self.state is TurnState.USER_PAUSED:
            self._interim_after_score = False
            self._do(RequestInterim(event.stream, decisive=True))
        if self.state is TurnState.USER_SPEAKING:
            if self.preempt and self.overlap is None and same_words(event.text, self._latest):
                self._preempt(event.stream, event.text)  # still the latest words: answer early
            return
        if self.others.answers(event.text):  # another hearing's score: the reply waited for it
            reply, self._scoring = self._scoring, None
            if reply is not None and self.state is TurnState.USER_PAUSED and (
                    event.probability is None or not self._recheck_unsure(reply, event.stream)):
                self._start_held(reply)
            return
        reply = self._scoring
        if reply is None or self.state is not TurnState.USER_PAUSED \
                or not same_words(reply.user_text, event.text):
            return  # the user went on, or the turn ended first, or another transcript's score
        self._scoring = None
        self._verdict(reply, event.probability, gave_way=event.gave_way)

    def _verdict(self, reply: TurnReply, probability: float | None, *,
                 gave_way: bool = False) -> None:
        """The pause's transcript was scored: set the silence that ends the turn, and prepare
        the reply unless the words are half a question."""
        assert self.end_of_turn is not None
        ms = self.end_of_turn.silence_ms(probability, self.end_silence_ms, reply.user_text,
                                         gave_way=gave_way)
        log.info("[%s] end of turn p=%s: the turn ends after %.0f ms of silence",
                 self.session_id, probability, ms)
        self._do(SetEndSilence(ms))
        if self.end_of_turn.unsure(probability, reply.user_text) and self.reply is not reply \
                and self.stream is not None and self._recheck_unsure(reply, self.stream):
            return  # the reply starts after the other hearings' scores (the slot is theirs)
        if probability is None or probability >= self.end_of_turn.unfinished_p:
            if self.reply is not reply:
                self._start_held(reply)
        elif self.reply is reply:  # half a question after all: no reply to it
            self._drop_held("half a question")

    def _recheck_unsure(self, reply: TurnReply, stream: int) -> bool:
        """The best hearing's words were unsure (the long wait): another hearing that is a
        whole question ends the turn after the short silence (see OtherHearings). True while
        a score is on its way: ``reply`` starts after it (a score gives way to a reply that
        waits for its first token, and this one would be in the same slot)."""
        assert self.end_of_turn is not None
        step = self.others.step(self.verdicts, self.end_of_turn.other_hearing_p)
        if isinstance(step, str):
            self._scoring = reply
            self._score(stream, step)
            return True
        if step is not None:
            log.info("[%s] end of turn: another hearing, %r, scored p=%.2f", self.session_id,
                     *step)
            self._do(SetEndSilence(self.end_of_turn.done_ms))
        return False
