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

from dataclasses import dataclass

from ..core.words import words_key


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
    verdict_wait_ms: float = 1200.0
    """While the score is on its way, the turn does not end before this much silence: a
    half-question must not be answered for want of a verdict."""

    def silence_ms(self, probability: float | None, default_ms: float) -> float:
        """The silence that ends the turn for this score (``default_ms`` when unknown)."""
        if probability is None:
            return default_ms
        if probability >= self.done_p:
            return self.done_ms
        if probability < self.unfinished_p:
            return self.unfinished_ms
        return self.unsure_ms


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
