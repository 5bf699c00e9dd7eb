"""espeak-ng formant text to speech: robotic, but tiny, instant and always installable.

The fallback when the Piper voice is missing or fails. Each sentence is a separate
``espeak-ng --stdout`` call so the first one plays while the rest are made.
"""

from __future__ import annotations

import asyncio
import io
import re
import shutil
import wave
from collections.abc import AsyncIterator

import numpy as np

from voice_agent.core.config import V3Config
from voice_agent.core.errors import ModelNotReadyError, ProviderError
from voice_agent.services.base import AudioChunk, TTSService

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")
_BASE_WPM = 175  # espeak-ng's default speaking rate


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


class EspeakTTS(TTSService):
    name = "espeak"
    sample_rate = 22_050

    def __init__(self, config: V3Config, *, voice: str = "en-us") -> None:
        self._config = config
        self._voice = voice
        self._binary: str | None = None

    def load(self) -> None:
        self._binary = shutil.which("espeak-ng")
        if self._binary is None:
            raise ModelNotReadyError(self.name, "espeak-ng is not installed (apt-get install espeak-ng)")

    def warmup(self) -> None:
        import subprocess

        assert self._binary is not None
        subprocess.run([self._binary, "--stdout", "-v", self._voice, "hi"], check=True,
                       capture_output=True, timeout=10)

    async def _speak(self, sentence: str) -> AudioChunk:
        if self._binary is None:
            raise ProviderError(self.name, "not loaded", retryable=False)
        wpm = str(int(_BASE_WPM * self._config.voice.speed))
        proc = await asyncio.create_subprocess_exec(
            self._binary, "--stdout", "-v", self._voice, "-s", wpm, "--", sentence,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await proc.communicate()
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.kill()
            raise
        if proc.returncode != 0:
            raise ProviderError(self.name, f"espeak-ng failed: {err.decode(errors='replace')}")
        with wave.open(io.BytesIO(out), "rb") as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).copy()
        return AudioChunk(pcm=pcm, sample_rate=rate)

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        for sentence in split_sentences(text):
            chunk = await self._speak(sentence)
            if len(chunk.pcm):
                yield chunk
