"""Trims the silence a TTS puts around each piece it speaks.

Piper starts every piece with ~35 ms and ends it with 80-190 ms of near silence, as if each were
a whole utterance. At the start of a reply that lead is pure waiting; where a reply was cut inside
a sentence (its first words, or a cut to keep the audio flowing) the tail and the next lead add up
to a 150-250 ms hole in the middle of a sentence. Sentence ends keep their pause.
"""

from __future__ import annotations

import numpy as np

from ..services.base import AudioChunk

SILENCE_DBFS = -50.0
"""Samples below this level (of int16 full scale) count as silence; soft onsets such as "h" or
"f" start above it."""
KEEP_LEAD_MS = 5.0
KEEP_TAIL_MS = 40.0
"""Silence kept at a cut inside a sentence: a short breath, not a pause."""

_THRESHOLD = 32768 * 10 ** (SILENCE_DBFS / 20)


def trim_silence(chunk: AudioChunk, *, lead: bool = False, tail: bool = False) -> AudioChunk:
    """``chunk`` without its leading and/or trailing silence (a little is kept at each cut).
    Audio that is silent throughout is returned as it is."""
    loud = np.flatnonzero(np.abs(chunk.pcm.astype(np.int32)) > _THRESHOLD)
    if not (lead or tail) or loud.size == 0:
        return chunk
    rate = chunk.sample_rate
    start = max(0, int(loud[0]) - int(rate * KEEP_LEAD_MS / 1000)) if lead else 0
    end = min(len(chunk.pcm), int(loud[-1]) + 1 + int(rate * KEEP_TAIL_MS / 1000)) if tail \
        else len(chunk.pcm)
    if start == 0 and end == len(chunk.pcm):
        return chunk
    return AudioChunk(pcm=chunk.pcm[start:end], sample_rate=rate)


def ends_sentence(text: str) -> bool:
    """True if a piece of text ends a sentence (its pause after it is kept)."""
    return text.rstrip("\"')]» ").endswith((".", "!", "?", "…"))
