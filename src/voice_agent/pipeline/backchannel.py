"""Is what the user said over the agent only a backchannel ("uh huh", "yeah", a cough)?

Why: any speech over a reply cut it, so a listener's "uh huh" stopped the agent for good. Now
speech over a reply pauses it (silent at once, as a cut was), and once the words are known the
reply either goes on from where it paused (only backchannel words, or none: a cough, noise) or
is cut (anything more: "wait, what about Spain?").
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..core.config import DEFAULT_BACKCHANNELS

DEFAULT_STOP_WORDS = ("stop", "wait", "no", "hold", "pause", "quiet", "enough", "sorry",
                      "excuse", "hey", "what", "pardon", "shh", "listen", "actually")
"""Single words that do take the turn over a reply."""

_NOT_WORD = re.compile(r"[^\w\s']+")


def _words(text: str) -> list[str]:
    return _NOT_WORD.sub(" ", text.lower().replace("-", " ")).split()


class Backchannels:
    """The phrases a listener says without taking the turn (configurable).

    A single word over the reply is taken for one too unless it asks the agent to stop
    (``stop_words``): Whisper heard a flite voice's "uh huh" as "Amit.", which cut the reply.
    """

    def __init__(self, phrases: Iterable[str] = DEFAULT_BACKCHANNELS, *,
                 stop_words: Iterable[str] = DEFAULT_STOP_WORDS) -> None:
        self.phrases = sorted({tuple(_words(p)) for p in phrases if _words(p)},
                              key=len, reverse=True)
        self.stop_words = {w for s in stop_words for w in _words(s)}

    def __bool__(self) -> bool:
        return bool(self.phrases)

    def only(self, text: str, *, one_word: bool = True) -> bool:
        """True when ``text`` is nothing but backchannel phrases (or no words at all); with
        ``one_word``, any single word but a stop word too."""
        words = _words(text)
        if one_word and len(words) == 1 and self.phrases and words[0] not in self.stop_words:
            return True  # one word, and not "stop": most likely a misheard "uh huh"
        i = 0
        while i < len(words):
            for phrase in self.phrases:  # longest first: "uh huh" before "uh"
                if tuple(words[i:i + len(phrase)]) == phrase:
                    i += len(phrase)
                    break
            else:
                return False
        return True
