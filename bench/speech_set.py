"""The spoken questions, made at run time with espeak-ng + sox (no audio files in the repo).

Each question is a 48 kHz mono int16 WAV: a short lead-in of silence, the speech, then a trailing
pad. ``speech_end_s`` is where the spoken part ends, found from the audio's own energy, so the
client can timestamp the moment the last speech sample leaves it.
"""

from __future__ import annotations

import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATE = 48_000
LEAD_S = 0.3
TRAIL_S = 0.2  # the client keeps sending silence afterwards, so the pad can be short
WINDOW_S = 0.010
SILENCE_DBFS = -45.0
"""A 10 ms window quieter than this counts as silence (espeak's tails decay below it fast)."""

QUESTIONS: tuple[str, ...] = (
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Name a primary color.",
    "What is two plus two?",
    "Which planet is closest to the sun?",
    "What do bees make?",
    "I am planning a picnic this weekend. What are three simple foods that are easy to carry?",
    "My sister is learning to play the piano. How many keys does a standard piano have?",
    "Can you tell me why the sky looks blue on a clear day, in one short sentence?",
    "I left my tea on the table for an hour and now it is cold. Why does hot tea cool down?",
)


@dataclass(frozen=True)
class SpeechItem:
    text: str
    path: Path
    samples: np.ndarray  # int16 mono at RATE
    speech_end_s: float
    """Offset in the WAV of the end of the last speech sample (before the trailing pad)."""

    @property
    def duration_s(self) -> float:
        return len(self.samples) / RATE

    @property
    def speech_end_sample(self) -> int:
        """Index of the last speech sample."""
        return max(0, int(round(self.speech_end_s * RATE)) - 1)


def speech_end_s(samples: np.ndarray, rate: int = RATE, dbfs: float = SILENCE_DBFS) -> float:
    """End of the last window louder than ``dbfs``, refined to the last loud sample in it."""
    x = samples.astype(np.float32) / 32768.0
    win = max(1, int(rate * WINDOW_S))
    n = len(x) // win
    if n == 0:
        return 0.0
    rms = np.sqrt(np.mean(x[: n * win].reshape(n, win) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(20 * np.log10(rms) > dbfs)
    if len(loud) == 0:
        return 0.0
    start, stop = loud[-1] * win, (loud[-1] + 1) * win
    peak_floor = 10 ** (dbfs / 20)  # the same level as an amplitude, for the sample-level refine
    hits = np.flatnonzero(np.abs(x[start:stop]) > peak_floor)
    last = start + (int(hits[-1]) if len(hits) else win - 1)
    return (last + 1) / rate


def read_wav_mono(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        if w.getnchannels() > 1:
            data = data.reshape(-1, w.getnchannels())[:, 0]
        return data.copy(), w.getframerate()


def make_item(text: str, path: Path, *, voice: str = "en-us", wpm: int = 160,
              timeout_s: float = 30.0) -> SpeechItem:
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(raw), text],
                   check=True, timeout=timeout_s, capture_output=True)
    return item_from_wav(text, raw, path, timeout_s=timeout_s)


def item_from_wav(text: str, raw: Path, path: Path, *, timeout_s: float = 30.0) -> SpeechItem:
    """Any TTS engine's WAV (``raw``, deleted afterwards) as a question: 48 kHz mono int16 with
    the lead-in and trailing pad, at ``path``."""
    subprocess.run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(path),
                    "pad", str(LEAD_S), str(TRAIL_S)], check=True, timeout=timeout_s,
                   capture_output=True)
    raw.unlink(missing_ok=True)
    samples, rate = read_wav_mono(path)
    assert rate == RATE, rate
    return SpeechItem(text, path, samples, speech_end_s(samples))


def make_speech_set(folder: Path, questions: tuple[str, ...] = QUESTIONS) -> list[SpeechItem]:
    """One WAV per question in ``folder`` (a temp dir the caller owns)."""
    folder.mkdir(parents=True, exist_ok=True)
    return [make_item(q, folder / f"q{i:02d}.wav") for i, q in enumerate(questions)]
