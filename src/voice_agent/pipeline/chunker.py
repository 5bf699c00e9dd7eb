"""Cuts a stream of LLM tokens into speakable pieces for TTS.

The first piece of a reply may be a clause (cut at a comma once it has a few words), or, when no
punctuation comes early, its first few words, so the agent starts speaking sooner: on this CPU
each word the first piece waits for is ~90 ms of silence. Later pieces are whole sentences, which
sound better, unless the speaker asks for the words so far because its audio is about to run dry.
A cut by word count never ends on a word that leans on the next one ("the", "of", "is"): the
voice would say it as the end of a phrase ("The capital of." / "France is Paris").
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"([.!?]+[\"')\]]*)(\s+|$)")
_CLAUSE_END = re.compile(r"([,;:\u2014])\s+")
_WORD = re.compile(r"\S+\s+")  # a word known to be complete: whitespace came after it
_ABBREVIATIONS = {"mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "etc.", "e.g.", "i.e.", "no.", "jr.", "sr."}
_MARKDOWN = re.compile(r"[*_#`>|~]+")
# English words that lean on the word after them: articles, possessives, prepositions,
# conjunctions, auxiliaries and a few adverbs. A cut right after one sounds broken.
_LEANING = frozenset("""
a an the this that these those my your his her its our their some any no every each
of to in on at by for with from about into onto over under than as like through between after
before during without and or but nor so because if when while although though whether since
until unless is are was were am be been being has have had do does did can could will would
shall should may might must not very more most too
""".split())
_LEAN_EXTRA_WORDS = 2  # how far past the word count a cut may move to avoid a leaning word


def speakable(text: str) -> str:
    """Remove markdown and emoji that a TTS would read out or choke on."""
    text = _MARKDOWN.sub("", text)
    text = re.sub(r"[\U0001F000-\U0001FAFF\u2600-\u27BF]", "", text)
    return re.sub(r"\s+", " ", text).strip()


class SentenceChunker:
    def __init__(self, *, first_clause_min_words: int = 3, clause_min_words: int = 14,
                 first_piece_max_words: int = 0) -> None:
        """``first_piece_max_words``: cut the first piece after this many words when no sentence
        end or clause came sooner (0: never cut inside a clause)."""
        self._buf = ""
        self._first = True
        self._first_clause_min_words = first_clause_min_words
        self._clause_min_words = clause_min_words
        self._first_piece_max_words = first_piece_max_words

    def push(self, text: str) -> list[str]:
        """Add streamed text; return every piece that is now complete."""
        self._buf += text
        out: list[str] = []
        while (piece := self._next_piece()) is not None:
            out.append(piece)
        return out

    def cut_words(self, min_words: int) -> str | None:
        """Every complete word written so far as a piece, if there are ``min_words`` of them
        (the reply's audio is about to run dry: a cut inside a clause beats a silence)."""
        words = list(_WORD.finditer(self._buf))
        if len(words) < min_words:
            return None
        # Leave trailing leaning words for the next piece, as long as min_words remain.
        n = len(words)
        while n > max(1, min_words) and _leans(words[n - 1].group()):
            n -= 1
        cut = words[n - 1].end()
        piece, self._buf = speakable(self._buf[:cut]), self._buf[cut:]
        self._first = False
        return piece or None

    def flush(self) -> str | None:
        """The rest of the text at the end of the reply."""
        piece, self._buf = speakable(self._buf), ""
        return piece or None

    def flush_all(self, text: str) -> str | None:
        """The whole text as one speakable piece (naive, non-streaming baseline)."""
        return speakable(text) or None

    def _next_piece(self) -> str | None:
        cut = self._sentence_cut() or self._clause_cut() or self._word_cut()
        if cut is None:
            return None
        piece, self._buf = speakable(self._buf[:cut]), self._buf[cut:]
        self._first = False
        return piece or self._next_piece()

    def _sentence_cut(self) -> int | None:
        for m in _SENTENCE_END.finditer(self._buf):
            words = self._buf[: m.end(1)].split()
            last = words[-1].lower() if words else ""
            if last in _ABBREVIATIONS or re.fullmatch(r"[a-z]\.", last):
                continue  # "Dr. Smith", "J. K. Rowling"
            at_end = m.group(2) == ""  # no space after it yet
            if at_end and self._buf[m.start(1)] == "." and self._buf[: m.start(1)][-1:].isdigit():
                return None  # "3." may go on as "3.5": wait for the next token
            # Otherwise cut now, even at the end of the buffer: waiting for the next token to
            # see a space costs a whole token (~90 ms here) on every sentence.
            return m.end()
        return None

    def _clause_cut(self) -> int | None:
        need = self._first_clause_min_words if self._first else self._clause_min_words
        for m in _CLAUSE_END.finditer(self._buf):
            if len(self._buf[: m.start()].split()) >= need:
                return m.end()
        return None

    def _word_cut(self) -> int | None:
        if not self._first or self._first_piece_max_words <= 0:
            return None
        limit = self._first_piece_max_words
        for n, m in enumerate(_WORD.finditer(self._buf), start=1):
            if n >= limit and (not _leans(m.group()) or n == limit + _LEAN_EXTRA_WORDS):
                return m.end()
        return None


def _leans(word: str) -> bool:
    return word.strip().strip("\"'()[]").lower() in _LEANING
