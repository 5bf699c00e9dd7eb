"""VAD-based turn detection: when does the user start speaking, and when has the turn ended?"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np

from ..services.base import VAD


@dataclass(frozen=True)
class TurnOptions:
    threshold: float = 0.5
    """Speech probability at or above which a frame is speech."""
    min_speech_ms: int = 160
    """Continuous speech needed to start a turn (filters clicks, coughs, short noises)."""
    end_of_turn_silence_ms: int = 500
    """Silence after speech that ends the turn."""
    max_utterance_s: float = 30.0
    """Speech longer than this ends the turn anyway, so a monologue still gets an answer."""
    early_silence_ms: int = 160
    """Silence after which a speculative transcript is worth starting (see TurnEvent.PAUSE)."""


PREROLL_MS = 300
"""Audio kept from before speech was confirmed, at least, so that first syllables are not lost."""
PREROLL_MAX_MS = 1000
"""At most this much before the confirmation (see :attr:`TurnDetector.onset_ms`)."""
ONSET_MARGIN_MS = 100
"""Kept before the first speech frame: the VAD hears a soft onset ("wh", "h") late."""
ONSET_GAP_MS = 200
"""Silence that separates a noise or an earlier sound from the speech that starts a turn;
shorter dips (the stop between two words) belong to it."""


class TurnEvent(Enum):
    SPEECH_START = "speech_start"
    PAUSE = "pause"  # the user went quiet; the turn may be about to end
    RESUME = "resume"  # speech again after a PAUSE, within the same turn
    END_OF_TURN = "end_of_turn"


class TurnDetector:
    """Feeds VAD frames through a small state machine with hysteresis.

    Times are in audio milliseconds, so the detector behaves the same whether audio arrives in
    real time from a microphone or all at once from a file.
    """

    def __init__(self, vad: VAD, options: TurnOptions) -> None:
        self.vad = vad
        self.options = options
        self.frame_ms = vad.frame_samples * 1000 / 16000
        # Hysteresis: once speaking, only clearly non-speech frames count as silence.
        self._off_threshold = max(0.05, options.threshold - 0.15)
        self.in_speech = False
        self._speech_run_ms = 0.0
        self.silence_run_ms = 0.0
        self.utterance_ms = 0.0
        self._paused = False
        self.last_probability = 0.0
        self._onset_run_ms = 0.0
        self._onset_dip_ms = 0.0
        self.onset_ms = 0.0
        """At SPEECH_START: audio from where that speech began (short dips included) to the
        frame that confirmed it. A short first word ("Which", then a stop, then "planet...")
        does not make the 160 ms run on its own: over Opus the confirmation came 480 ms after
        the word began, and 300 ms of preroll lost it ("planet is closest to the sun")."""
        self.end_silence_ms = float(options.end_of_turn_silence_ms)
        """Silence that ends this turn: end_of_turn_silence_ms, until what the user said so
        far says otherwise (shorter for a complete question, longer for half of one); back to
        the option at each start and resume of speech."""

    @property
    def paused(self) -> bool:
        """In a turn, and silent for at least early_silence_ms."""
        return self.in_speech and self._paused

    def process(self, frame: np.ndarray) -> TurnEvent | None:
        p = self.vad.speech_probability(frame)
        self.last_probability = p
        if not self.in_speech:
            speech = p >= self.options.threshold
            self._speech_run_ms = self._speech_run_ms + self.frame_ms if speech else 0.0
            self._track_onset(speech)
            if self._speech_run_ms >= self.options.min_speech_ms:
                self.onset_ms, self._onset_run_ms, self._onset_dip_ms = self._onset_run_ms, 0.0, 0.0
                self.in_speech = True
                self.utterance_ms = self._speech_run_ms
                self.silence_run_ms = 0.0
                self._paused = False
                self.end_silence_ms = float(self.options.end_of_turn_silence_ms)
                return TurnEvent.SPEECH_START
            return None
        self.utterance_ms += self.frame_ms
        if p < self._off_threshold:
            self.silence_run_ms += self.frame_ms
        elif p >= self.options.threshold:
            self.silence_run_ms = 0.0
            if self._paused:
                self._paused = False
                self.end_silence_ms = float(self.options.end_of_turn_silence_ms)
                return TurnEvent.RESUME
        ended = self.silence_run_ms >= self.end_silence_ms
        if ended or self.utterance_ms >= self.options.max_utterance_s * 1000:
            self.in_speech = False
            self._speech_run_ms = 0.0
            return TurnEvent.END_OF_TURN
        if not self._paused and self.silence_run_ms >= self.options.early_silence_ms:
            self._paused = True
            return TurnEvent.PAUSE
        return None

    def _track_onset(self, speech: bool) -> None:
        if speech:  # a dip only counts while a run is open, so this adds 0 to a new run
            self._onset_run_ms += self.frame_ms + self._onset_dip_ms
            self._onset_dip_ms = 0.0
        elif self._onset_run_ms:
            self._onset_dip_ms += self.frame_ms
            if self._onset_dip_ms >= ONSET_GAP_MS:
                self._onset_run_ms = self._onset_dip_ms = 0.0

    def preroll_frames(self) -> int:
        """Frames of audio from before the confirmation a new turn starts with: back to
        where its speech began (:attr:`onset_ms`) with a margin, PREROLL_MS at least,
        PREROLL_MAX_MS at most."""
        keep = min(PREROLL_MAX_MS, max(PREROLL_MS, self.onset_ms + ONSET_MARGIN_MS))
        return max(1, math.ceil(keep / self.frame_ms))

    def reset(self) -> None:
        self.vad.reset()
        self.in_speech = False
        self._speech_run_ms = self.silence_run_ms = self.utterance_ms = 0.0
        self._onset_run_ms = self._onset_dip_ms = 0.0
        self._paused = False
