"""Piper neural text to speech (ONNX), one audio chunk per sentence.

Piper's own ``synthesize`` is a generator that phonemizes the text and makes each sentence's audio
on demand; stepping it one sentence at a time in a worker thread yields the first sentence
(~90 ms) while later ones are still text, and closing our generator simply stops stepping.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voice_agent.core.config import V3Config
from voice_agent.core.errors import ProviderError
from voice_agent.core.priority import model_executor
from voice_agent.services.base import AudioChunk, TTSService
from voice_agent.services.models import model_path
from voice_agent.services.priority_lock import PriorityLoopLock

if TYPE_CHECKING:
    from piper import PiperVoice, SynthesisConfig
    from piper.voice import AudioChunk as PiperChunk


class PiperTTS(TTSService):
    name = "piper"
    sample_rate = 22_050

    def __init__(self, config: V3Config) -> None:
        self._config = config
        self._voice: PiperVoice | None = None
        self._syn: SynthesisConfig | None = None
        # espeak-ng's phonemizer inside piper keeps global state: one sentence at a time.
        self._lock = threading.Lock()
        self._queue = PriorityLoopLock()  # callers wait here, not in executor threads, by
        # urgency: a reply's first sentence before another reply's later ones
        self._worker = model_executor("piper", config.server.model_threads_nice)
        self.path: Path | None = None

    def load(self) -> None:
        from piper import PiperVoice, SynthesisConfig

        self.path = model_path(self._config, "tts", prepare_missing=True)
        config_file = self.path.with_name(self.path.name + ".json")
        try:
            voice = self._load_voice(PiperVoice, config_file)
        except Exception as exc:
            raise ProviderError(self.name, f"cannot load voice {self.path}: {exc}",
                                retryable=False) from exc
        self.sample_rate = int(voice.config.sample_rate)
        # speed 2.0 halves phoneme durations: length_scale is the inverse of the speaking rate.
        self._syn = SynthesisConfig(length_scale=voice.config.length_scale / self._config.voice.speed)
        self._voice = voice

    def _load_voice(self, piper_voice: type, config_file: Path) -> Any:
        """PiperVoice.load, but with our onnxruntime session: capped at ``voice.threads`` (by
        default onnxruntime takes every core and fights the LLM, which keeps generating while
        the first piece is spoken), and without a memory arena."""
        import json

        import onnxruntime
        from piper.config import PiperConfig

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self._config.voice.threads
        options.inter_op_num_threads = 1
        # No onnxruntime arena: it grows in doubling steps with the longest sentence so far and
        # never shrinks (+265 MB of heap in one step in a probe); plain malloc memory goes back
        # to the kernel with the server's trim after each session. ~4% slower first audio.
        options.enable_cpu_mem_arena = False
        session = onnxruntime.InferenceSession(str(self.path), sess_options=options,
                                               providers=["CPUExecutionProvider"])
        config = PiperConfig.from_dict(json.loads(config_file.read_text(encoding="utf-8")))
        return piper_voice(config=config, session=session)

    def warmup(self) -> None:
        for _ in self._sentences("Hello."):
            pass

    def close(self) -> None:
        with self._lock:
            self._voice = None

    def _sentences(self, text: str) -> Iterator[PiperChunk]:
        if self._voice is None:
            raise ProviderError(self.name, "voice not loaded", retryable=False)
        return iter(self._voice.synthesize(text, self._syn))

    def _next(self, it: Iterator[PiperChunk]) -> PiperChunk | None:
        with self._lock:
            try:
                return next(it, None)
            except Exception as exc:
                raise ProviderError(self.name, f"synthesis failed: {exc}") from exc

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        if not text.strip():
            return
        it = self._sentences(text)
        # Closing this generator just stops stepping ``it``: piper's generator holds no native
        # resources, so dropping it is enough (and a sentence in flight finishes in its thread).
        while True:
            async with self._queue.hold():  # sessions take turns per sentence
                chunk = await asyncio.get_running_loop().run_in_executor(
                    self._worker, self._next, it)
            if chunk is None:
                return
            pcm = np.ascontiguousarray(chunk.audio_int16_array, dtype=np.int16).reshape(-1)
            if len(pcm):
                yield AudioChunk(pcm=pcm, sample_rate=int(chunk.sample_rate))
