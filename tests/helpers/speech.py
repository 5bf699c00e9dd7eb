"""Test speech made at test time with espeak-ng and sox (system packages)."""

from __future__ import annotations

import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np


def speech_wav(text: str, path: Path, *, rate: int = 16000, channels: int = 1,
               pad_before: float = 0.3, pad_after: float = 1.0, voice: str = "en") -> Path:
    """Speak ``text`` into a WAV at ``rate`` Hz with silence around it. espeak's default "en"
    voice: Whisper base hears its "of France" reliably, en-us's only now and then."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text], check=True)
        subprocess.run(["sox", str(raw), "-r", str(rate), "-c", str(channels), "-b", "16",
                        str(path), "pad", str(pad_before), str(pad_after)], check=True)
    return path


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """int16 samples (mono: first channel) and the sample rate."""
    with wave.open(str(path), "rb") as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        if w.getnchannels() > 1:
            data = data.reshape(-1, w.getnchannels())[:, 0]
        return data.copy(), w.getframerate()


def speech_16k(text: str, *, pad_before: float = 0.3, pad_after: float = 1.0) -> np.ndarray:
    """float32 mono 16 kHz speech in [-1, 1]."""
    with tempfile.TemporaryDirectory() as tmp:
        p = speech_wav(text, Path(tmp) / "s.wav", pad_before=pad_before, pad_after=pad_after)
        pcm, _ = read_wav(p)
    return pcm.astype(np.float32) / 32768.0


def trim(audio: np.ndarray) -> np.ndarray:
    """Cut espeak's own leading and trailing silence, so a test sets its pauses exactly."""
    loud = np.flatnonzero(np.abs(audio) > 0.02)
    return audio[loud[0]: loud[-1] + 1]


def noise_16k(seconds: float, level: float = 0.1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * 16000)) * level).clip(-1, 1).astype(np.float32)


def silence_16k(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * 16000), np.float32)
