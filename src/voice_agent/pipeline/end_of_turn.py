"""How long to wait in a pause before the turn ends, from what the user said so far.

Why: a fixed 500 ms of silence answered half-questions ("What is the largest city in ...
Canada?" with a 1.2 s pause got an answer after its first half). At each pause the LLM scores
the transcript so far: the probability that a sentence ends after these words
(``LlamaCppLLM.end_of_turn_probability``, punctuation dropped). Measured on 280 synthetic
questions (docs/end_of_turn.md): on Whisper's words, p >= 0.5 was a complete question 98% of the
time; p < 0.1 an unfinished one 92% of the time. Smart Turn v3.2 (audio) was right 60-65% on
the same voices and stays out of the decision until measured on real speech.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..core.words import same_words, words_key


@dataclass(frozen=True)
class EndOfTurnRule:
    done_p: float = 0.5
    """At or above this, the words are a whole turn: it ends after ``done_ms`` of silence."""
    unfinished_p: float = 0.1
    """Below this, the user is mid-sentence: the turn waits ``unfinished_ms`` of silence."""
    done_ms: float = 250.0
    unsure_ms: float = 1700.0
    """Between the two thresholds (a complete question said oddly, a fragment misheard):
    past a 1.5 s pause (stt.end_of_turn_unsure_ms says why)."""
    unfinished_ms: float = 2000.0
    """Long enough for a pause to find a word (1.2-1.5 s here), short enough not to look dead."""
    other_hearing_p: float = 0.7
    """When the best hearing's words were unsure, another hearing of the pause scored at or
    above this ends the turn after ``done_ms`` (see OtherHearings). Above ``done_p``: a
    statement before a question ("My friend is baking a cake this afternoon." 0.47-0.49) is
    unsure too, and its other hearings score near it; at 0.5 bench accuracy found two
    two-sentence questions cut after their first sentence."""
    verdict_wait_ms: float = 1200.0
    """While the score is on its way, the turn does not end before this much silence: a
    half-question must not be answered for want of a verdict."""

    def unsure(self, probability: float | None, words: str = "") -> bool:
        """Between the two thresholds: a whole turn or half of one (the ``unsure_ms`` wait);
        but not ``words`` that ask a question after a lead-in (:func:`asks_after_lead_in`),
        which end the turn after the plain silence timeout. The model scores such
        two-sentence questions low ("I am planning a picnic this weekend. What are three simple
        foods that are easy to carry?" 0.25, "...now it is cold. Why does hot tea cool down?"
        0.19; 13 of 16 such questions scored 0.5 or more), while their second sentences cut
        short, closed with a question mark as Whisper writes them, score below
        ``unfinished_p``: 101 of 104 cuts of those 16, the others being whole questions too
        ("...now it is cold. Why?" 0.46, "...camping next week. What should we bring?" 0.65).
        Offline, the words as said, the default system prompt (docs/end_of_turn.md)."""
        return probability is not None and self.unfinished_p <= probability < self.done_p \
            and not asks_after_lead_in(words)

    def silence_ms(self, probability: float | None, default_ms: float, words: str = "", *,
                   gave_way: bool = False) -> float:
        """The silence that ends the turn for this score of ``words``. Unknown, or unsure of a
        question after a lead-in (:meth:`unsure`): ``default_ms``;
        but when the model ``gave_way`` to another session's reply, ``verdict_wait_ms`` after
        words that do not look like a whole question (:func:`looks_finished`): a lead-in
        ("My sister is learning to play the piano.": under load 3 of 72 scores gave way, one
        on it) or a cut-off question ("what is the largest city in", four clients at once:
        its score gave way, 500 ms answered the first half)."""
        if probability is None:
            if gave_way and not looks_finished(words):
                return max(default_ms, self.verdict_wait_ms)
            return default_ms
        if probability >= self.done_p:
            return self.done_ms
        if probability < self.unfinished_p:
            return self.unfinished_ms
        return self.unsure_ms if self.unsure(probability, words) else default_ms


_OPEN_ENDINGS = frozenset(
    "a an the and or but nor of to in on at for with from about between into than by as "
    "my your his her our their its plus minus times".split())
"""Last words that leave a sentence open ("What is the largest city in?", "How far away is
the..."): Whisper closes 85 of 100 cut-off questions with punctuation all the same."""
_OPEN_VERBS = frozenset(
    "is are was were am does did can could will would shall should may might must".split())
"""A question that ends on its auxiliary is mostly cut off ("Which planet is?", "How many legs
does?"); the whole ones ("Can you tell me where the station is?") are scored, which is safe.
Not "do", "have", "be": they end whole questions as main verbs ("What do you do?", "How many
keys does it have?")."""


_QUESTION_OPENERS = frozenset(
    "what which who whom whose where when why how is are was were am do does did can could "
    "will would should shall may might have has had".split())
_REQUEST_OPENERS = frozenset(
    "name tell give list explain describe say define spell translate count recommend suggest "
    "show find remind calculate convert summarize compare".split())
"""How a question or a request opens: Whisper closes some with a full stop ("which planet is
closest to the Sun.", "Name a primary color."), a lead-in seldom opens so ("My sister is
learning to play the piano.", "I left my tea on the table.")."""
_OPENERS = _QUESTION_OPENERS | _REQUEST_OPENERS
_SENTENCES = re.compile(r"(?<=[.!?])\s+")


def looks_cut_off(text: str) -> bool:
    """Words that stop where no sentence can: on a word that leans on the next ("What is the
    largest city in", "Which planet is?"), or trailing off ("the...", "spider-")."""
    closed = text.rstrip().rstrip("\"'")
    if closed.endswith(("..", "\u2026", "-")):
        return True
    words = words_key(text).split()
    return bool(words) and (words[-1] in _OPEN_ENDINGS or words[-1] in _OPEN_VERBS)


def looks_finished(text: str) -> bool:
    """Words that look like a whole question by their text alone: a closing question or
    exclamation mark after a last word that can end a sentence; or a full stop after such a
    word when the last sentence opens like a question or a request (a statement that opens
    otherwise may be a question's lead-in: "My sister is learning to play the piano."). A
    cheap first look, not a verdict ("Can you tell me?" looks finished); the LLM's score is
    what knows."""
    closed = text.rstrip().rstrip("\"'")
    if not closed.endswith(("?", "!", ".")) or not words_key(text) or looks_cut_off(text):
        return False
    if not closed.endswith("."):
        return True
    opening = words_key(_SENTENCES.split(closed)[-1]).split()
    return bool(opening) and opening[0] in _OPENERS


def asks_after_lead_in(text: str) -> bool:
    """A whole-looking question (:func:`looks_finished`, closed by a question mark) after a
    sentence of its own: "I am planning a picnic this weekend. What are three simple foods
    that are easy to carry?"."""
    closed = text.rstrip().rstrip("\"'")
    return closed.endswith("?") and len(_SENTENCES.split(closed)) >= 2 and looks_finished(text)


class Verdicts:
    """The scores of one utterance's transcripts, by their words: a pause whose transcript has
    the words of an interim scored while the user spoke needs no second score (~60-110 ms of
    the LLM on a 2-core CPU, on the path to the end of the turn)."""

    def __init__(self) -> None:
        self._known: dict[str, float | None] = {}
        self.pending: str | None = None
        """The words of the score on its way (one at a time)."""

    def clear(self) -> None:
        self._known.clear()
        self.pending = None

    def asked(self, text: str) -> None:
        self.pending = words_key(text)

    def got(self, text: str, probability: float | None) -> None:
        if words_key(text) == self.pending:
            self.pending = None
        if probability is not None:  # None (the model was busy) is no verdict: ask again
            self._known[words_key(text)] = probability

    def is_pending(self, text: str) -> bool:
        return self.pending == words_key(text)

    def known(self, text: str) -> bool:
        return words_key(text) in self._known

    def get(self, text: str) -> float | None:
        return self._known.get(words_key(text))


class OtherHearings:
    """A pause's other hearings (Whisper's beam), scored one by one when the best hearing's
    words were unsure: a misheard question often scores there ("What do these make?" 0.24),
    while a hearing with the right words is plainly complete ("What do bees make?" 0.57).
    Offline, 420 pauses in 5 synthetic voices (espeak-ng, flite): 55 complete questions and 6
    fragments scored unsure; another hearing scored >= 0.7 for 17 of the questions (>= 0.5:
    22) and for none of the fragments (their best: 0.36). Not below the unsure band: there
    another hearing scored complete for 6 of 92 fragments."""

    def __init__(self) -> None:
        self._left: list[str] = []
        self._asked: str | None = None

    def start(self, texts: Iterable[str]) -> None:
        """A new pause's transcript: its other hearings, best first."""
        self._left, self._asked = [t for t in texts if t], None

    def clear(self) -> None:
        self._left, self._asked = [], None

    def answers(self, text: str) -> bool:
        """The score of ``text`` is the one asked for here (the next :meth:`step` reads it)."""
        if self._asked is None or not same_words(text, self._asked):
            return False
        self._left.insert(0, self._asked)
        self._asked = None
        return True

    def step(self, verdicts: Verdicts, enough_p: float) -> str | tuple[str, float] | None:
        """The next hearing to score; or one scored complete (its text and score): the turn
        may end soon; or None: none left."""
        while self._left:
            text = self._left.pop(0)
            if not verdicts.known(text):
                self._asked = text
                return text
            p = verdicts.get(text)
            if p is not None and p >= enough_p:
                self._left = []
                return text, p
        return None
