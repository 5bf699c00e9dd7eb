"""Transcripts compared by their words, case and punctuation aside."""

from __future__ import annotations

import re

_NOT_A_WORD = re.compile(r"[^\w']+")


def same_words(a: str, b: str) -> bool:
    """Two transcripts say the same words (case and punctuation aside): Whisper's greedy
    interim and its beam-decoded pause transcript often differ only in a comma or a '?'."""
    return words_key(a) == words_key(b)


def words_key(text: str) -> str:
    return " ".join(_NOT_A_WORD.sub(" ", text.lower()).split())
